"""``comm.strategy=auto`` on 3 gloo processes: every rank makes the same choice from its
own (different) measurements, a NaN on one rank after the choice neither hangs nor
poisons the next step, the strategy's state survives a round trip, and the provisional
choice in step 0 compresses the observed steps (off: they are dense)."""

from __future__ import annotations

import time

import torch
from torch import nn

from scidl.comm import CommConfig, build_strategy
from scidl.testing import run_distributed

SLOW = (1e-4, 8 / 50e6)  # a 50 Mbit/s link: compression pays


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                         nn.Linear(128, 8))


def _step(ddp, net, strat, rank, t, poison=False):
    g = torch.Generator().manual_seed(100 * t + rank)
    x, y = torch.randn(4, 64, generator=g), torch.randn(4, 8, generator=g)
    if rank == 1:
        time.sleep(0.002 * t)  # this rank's measurements differ from the others'
    net.zero_grad(set_to_none=True)
    loss = ((ddp(x) - y) ** 2).mean()
    if poison:
        loss = loss * float("nan")
    loss.backward()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in net.parameters())
    if finite:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-0.05)
    else:
        strat.on_skipped_step()
    return finite, strat.end_step()["bytes_sent"]


def _worker(rank: int, world: int) -> dict:
    out = {}
    for label, link, provisional in (("given", SLOW, True), ("probed", None, True),
                                     ("dense_first", SLOW, False)):
        cfg = CommConfig(strategy="auto", bucket_cap_mb=0.03, auto_warmup_steps=3,
                         auto_link=link, auto_probe_bytes=(1024, 65536), rank=2, density=0.05,
                         auto_provisional=provisional)
        net = _net()
        strat = build_strategy(cfg)
        ddp = strat.wrap(net)
        steps = [_step(ddp, net, strat, rank, t,
                       poison=(label == "given" and t == 4 and rank == 1)) for t in range(7)]
        finite = [f for f, _ in steps]
        rep = strat.report()
        out[label] = {"choice": rep["choice"], "link": rep["link"], "finite": finite,
                      "sent": [b for _, b in steps],
                      # no choice comes after the refined one: no timeline kept
                      "kept": sum(len(g) for g in strat._gaps.values()),
                      "decisions": rep["decisions"], "params": [p.detach().clone() for p in
                                                                net.parameters()]}
        if label == "given":  # state round trip into a fresh strategy on the same model
            state = strat.state_dict()
            strat2 = build_strategy(cfg)
            strat2.wrap(net)
            strat2.load_state_dict(state)
            s2 = strat2.state_dict()
            out["round_trip"] = (s2["choice"] == state["choice"]
                                 and s2["bucket_keys"] == state["bucket_keys"]
                                 and s2["param_choice"] == state["param_choice"]
                                 and s2["link"] == state["link"]
                                 and _same(s2["inner"], state["inner"]))
            # a chosen candidate with error feedback carries its residuals in the state
            # (which candidate the slow link gets depends on the measured timeline)
            inner, chosen = state["inner"], set(rep["choice"])
            kept = {"topk": inner.get("topk", {}).get("residuals"),
                    "powersgd": inner.get("powersgd", {}).get("err")}
            kept |= {n: inner[n].get("worker") for n in chosen if n.startswith("quant")}
            out["has_residual"] = all(bool(v) for n, v in kept.items() if n in chosen)
            out["ef_chosen"] = sorted(n for n in kept if n in chosen)
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_auto_same_choice_nonfinite_and_state_round_trip():
    res = run_distributed(_worker, 3, timeout=120)
    for label in ("given", "probed", "dense_first"):
        choices = [r[label]["choice"] for r in res]
        links = [r[label]["link"] for r in res]
        assert len(choices[0]) >= 2  # several buckets were decided
        assert all(c == choices[0] for c in choices), choices
        assert all(lk == links[0] for lk in links), links
        for r in res:  # the per-bucket numbers behind the choice are the same everywhere
            d = r[label]["decisions"][0]
            assert d["bucket_compute_s"] == res[0][label]["decisions"][0]["bucket_compute_s"]
            assert d["predicted_step_s"] is not None and d["measured_step_s"] is not None
    assert any(c != "dense" for c in res[0]["given"]["choice"])  # the slow link compresses
    # provisional choice in step 0's first hook, refined after step 2; one link probe
    given, dense_first = res[0]["given"], res[0]["dense_first"]
    assert [(d["kind"], d["step"]) for d in given["decisions"]] == [("provisional", 0),
                                                                     ("refined", 3)]
    assert len(set(given["decisions"][0]["choice"])) == 1  # one candidate for all
    probed = res[0]["probed"]["decisions"]
    assert probed[0]["probe_s"] is not None and probed[1]["probe_s"] is None
    small_b, large_b = probed[0]["probe_bytes"]  # within comm.auto_probe_bytes=(1024, 65536)
    assert small_b == 1024 and 8 * 1024 <= large_b <= 65536 and large_b % 4 == 0
    assert probed[1]["link"] == probed[0]["link"]
    assert [(d["kind"], d["step"]) for d in dense_first["decisions"]] == [("final", 3)]
    # bytes: steps 0-2 compressed with the provisional choice, dense without it
    sent, dense_sent = given["sent"], dense_first["sent"]
    assert max(sent[0:3]) < 0.7 * dense_sent[0]
    assert min(dense_sent[1:3]) >= dense_sent[0]
    assert max(dense_sent[3:]) < 0.7 * dense_sent[0]
    assert given["kept"] == 0 and dense_first["kept"] == 0
    assert res[0]["probed"]["link"]["beta"] > 0
    # NaN on rank 1 at step 4 (after the choice): every rank skipped exactly that step,
    # and the next steps are finite again on every rank (no NaN kept in any residual)
    for r in res:
        assert r["given"]["finite"] == [True] * 4 + [False] + [True] * 2
        assert all(bool(torch.isfinite(p).all()) for p in r["given"]["params"])
    for a, b in zip(res[0]["given"]["params"], res[2]["given"]["params"], strict=True):
        assert torch.allclose(a, b, atol=1e-6)  # replicas stay in step
    assert all(r["round_trip"] for r in res)
    assert res[0]["has_residual"]


def _adam_worker(rank: int, world: int) -> dict:
    out = {}
    for label, steps in (("measured", 4), ("timed", 0)):
        cfg = CommConfig(strategy="auto", bucket_cap_mb=0.03, auto_warmup_steps=2,
                         auto_fidelity_steps=steps, auto_link=SLOW, rank=2, density=0.05,
                         auto_every=2,
                         auto_candidates=["dense", "fp16", "quant", "quant:quant_bits=4",
                                          "powersgd", "topk"])
        net = _net()
        strat = build_strategy(cfg)
        ddp = strat.wrap(net)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        strat.use_optimizer(opt)
        finite = []
        for t in range(7):
            g = torch.Generator().manual_seed(100 * t + rank)
            x, y = torch.randn(4, 64, generator=g), torch.randn(4, 8, generator=g)
            opt.zero_grad(set_to_none=True)
            loss = ((ddp(x) - y) ** 2).mean()
            if t == 2 and rank == 1:  # a NaN inside the measuring window
                loss = loss * float("nan")
            loss.backward()
            ok = all(bool(torch.isfinite(p.grad).all()) for p in net.parameters())
            finite.append(ok)
            if ok:
                opt.step()
            else:
                strat.on_skipped_step()
            strat.end_step()
        state = strat.state_dict()
        again = build_strategy(cfg)  # a resumed run keeps what was measured
        again.wrap(_net())
        again.load_state_dict(state)
        out[label] = {"decisions": strat.report()["decisions"], "choice": strat.report()["choice"],
                      "finite": finite, "freed": strat._fidelity is None,
                      "sums_kept": again._kept_sums == strat._kept_sums
                      and (strat._kept_sums is not None) == (rank == 0 and steps > 0)
                      and again._kept_codec == strat._kept_codec
                      and (strat._kept_codec is not None) == (rank == 0 and steps > 0)}
    return out


def test_auto_prices_the_update_each_compressor_keeps_before_its_refined_choice():
    res = run_distributed(_adam_worker, 2, timeout=120)
    for label in ("measured", "timed"):
        assert res[0][label]["choice"] == res[1][label]["choice"]  # rank 0's, broadcast
        assert all(r[label]["finite"] == [True, True, False, True, True, True, True] for r in res)
    measured = res[0]["measured"]["decisions"]
    # the refined choice waits for the measuring steps, then the tracker is freed; the
    # later choice (comm.auto_every) is priced with the same measured sums
    assert [(d["kind"], d["step"]) for d in measured] == [("provisional", 0), ("refined", 4),
                                                          ("again", 6)]
    assert measured[2]["update_kept_per_bucket"] == measured[1]["update_kept_per_bucket"]
    assert all(r[label]["sums_kept"] for r in res for label in ("measured", "timed"))
    assert res[0]["measured"]["freed"] and res[1]["measured"]["freed"]
    kept = measured[1]["update_kept_per_bucket"]
    names = {"quant", "quant:quant_bits=4", "powersgd", "topk"}
    assert len(kept) >= 2 and all(set(k) == names for k in kept)
    # each compressed candidate's work per bucket was timed with it
    codec = measured[1]["codec_s_per_bucket"]
    assert len(codec) == len(kept) and all(set(c) == names and min(c.values()) > 0
                                           for c in codec)
    # before anything is sent, rank 0 priced the candidates on step 0's first gradients
    first = measured[0]
    assert set(first["gradient_kept"]) == names and min(first["codec_s_per_entry"].values()) > 0
    assert first["gradient_kept"]["quant"] > max(first["gradient_kept"]["quant:quant_bits=4"],
                                                 first["gradient_kept"]["topk"])
    assert "gradient_kept" not in res[1]["measured"]["decisions"][0]
    # 8-bit rounding keeps most of Adam's update, far more than rank 2 or 5 % of entries
    assert all(k["quant"] > 0.9 and k["quant"] > max(k["powersgd"], k["topk"]) for k in kept)
    assert all(0.0 <= v <= 1.0 + 1e-9 for k in kept for v in k.values())
    assert 0.0 <= measured[1]["update_kept"] <= 1.0 + 1e-9
    assert "update_kept" not in res[1]["measured"]["decisions"][1]  # measured on rank 0 only
    timed = res[0]["timed"]["decisions"]  # auto_fidelity_steps=0: time alone, as before
    assert [(d["kind"], d["step"]) for d in timed][:2] == [("provisional", 0), ("refined", 2)]
    assert all("update_kept" not in d and "gradient_kept" not in d for d in timed)
