"""``comm.strategy=auto``: the pure decision function, the link fit and the settings."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from scidl.comm import CommConfig
from scidl.comm.accounting import ring_allreduce_bytes
from scidl.comm.auto import (
    BucketInfo,
    Link,
    choose,
    fit_link,
    grow_probe_bytes,
    probe_large_bytes,
    simulate,
)

# A ResNet-like model: four buckets, the last one (first layers) ready at the very end.
SHAPES = [((512, 512, 3, 3),), ((256, 256, 3, 3), (256,)), ((128, 128, 3, 3),),
          ((64, 3, 3, 3), (64,))]
BUCKETS = [BucketInfo(sum(math.prod(s) for s in sh), 0.02, sh) for sh in SHAPES]
CFG = CommConfig(strategy="auto")


def test_slow_link_compresses_fast_link_stays_dense():
    slow = choose(BUCKETS, Link(1e-4, 8 / 100e6), 4, CFG)  # 100 Mbit/s
    fast = choose(BUCKETS, Link(1e-5, 8 / 100e9), 4, CFG)  # 100 Gbit/s
    assert fast.choice == ["dense"] * 4 and fast.moves == 0
    assert "dense" not in slow.choice[:3]  # every big bucket is compressed
    assert slow.choice[3] == "dense"  # 1.8 k entries: compressing saves under 5% of the step
    _, blocked, tail = simulate(BUCKETS, [[s] for s in _dense_seconds(Link(1e-4, 8 / 100e6))])
    assert slow.exposed_s < 0.5 * (blocked + tail)
    # in between, fewer buckets are compressed than on the slow link
    mid = choose(BUCKETS, Link(1e-4, 8 / 1e9), 4, CFG)
    assert 0 < sum(c != "dense" for c in mid.choice) <= sum(c != "dense" for c in slow.choice)


def _dense_seconds(link: Link) -> list[float]:
    return [2 * 3 * link.alpha + ring_allreduce_bytes(4.0 * b.numel, 4) * link.beta
            for b in BUCKETS]


def test_more_compute_to_hide_behind_needs_less_compression():
    link = Link(1e-4, 8 / 1e9)
    long = [BucketInfo(b.numel, 1.0, b.shapes) for b in BUCKETS]
    assert choose(long, link, 4, CFG).choice == ["dense"] * 4
    assert choose(BUCKETS, link, 4, CFG).choice != ["dense"] * 4


def test_a_small_gain_buys_no_more_compression():
    slow = Link(1e-4, 8 / 100e6)
    greedy = choose(BUCKETS, slow, 4, CFG, min_gain=0.0)
    careful = choose(BUCKETS, slow, 4, CFG, min_gain=0.5)
    assert greedy.moves > careful.moves
    assert careful.choice == ["dense"] * 4  # no single move gains half a step


def test_ladder_is_the_candidate_list_and_one_rank_sends_nothing():
    slow = Link(1e-4, 8 / 100e6)
    d = choose(BUCKETS, slow, 4, CFG, candidates=["dense", "fp16"])
    assert set(d.choice) <= {"dense", "fp16"} and "fp16" in d.choice
    assert choose(BUCKETS, slow, 1, CFG).choice == ["dense"] * 4
    # the decision is deterministic (every rank computes the same from the same numbers)
    assert choose(BUCKETS, slow, 4, CFG).choice == choose(BUCKETS, slow, 4, CFG).choice


def test_simulate_blocks_on_all_but_the_last_collective():
    b = [BucketInfo(10, 1.0), BucketInfo(10, 1.0)]
    bwd, blocked, tail = simulate(b, [[0.5], [3.0]])
    assert (bwd, blocked, tail) == (2.0, 0.0, 3.0)
    bwd, blocked, tail = simulate(b, [[0.5, 0.5], [0.1]])  # first bucket blocks 0.5 s
    assert (bwd, blocked) == (2.0, 0.5) and tail == pytest.approx(0.1)


def test_fit_link_recovers_alpha_beta():
    alpha, beta, p = 2e-4, 8 / 100e6, 4
    t = [2 * 3 * alpha + ring_allreduce_bytes(float(n), p) * beta for n in (32768, 1 << 20)]
    got = fit_link(32768, t[0], 1 << 20, t[1], p)
    assert got.alpha == pytest.approx(alpha, rel=1e-6) and got.beta == pytest.approx(beta, rel=1e-6)
    assert fit_link(32768, 0.5, 1 << 20, 0.1, p).beta > 0  # noisy probe: never negative


@pytest.mark.parametrize("bad", [["dense", "lag"], ["auto"], ["grouped"], [], ["dense", "dense"],
                                 ["dense", "nope"], ["dense", "quant:quant_bits"],
                                 ["dense", "quant:bits=4"], ["dense", "quant:auto_every=2"],
                                 ["dense", "quant:strategy=dense"], ["dense", "quant:quant_bits=5"],
                                 ["dense", "lag:lag_inner=dense"]])
def test_bad_candidates_are_refused(bad):
    with pytest.raises(ValidationError, match="auto_candidates|unknown"):
        CommConfig(strategy="auto", auto_candidates=bad)


def test_large_probe_takes_about_its_budget_on_a_slow_link():
    # 32 KiB in 2.6 ms (100 Mbit/s): 25 ms moves 315 KB; a multiple of 4
    n = probe_large_bytes(32768, 0.0026, 1 << 20, target_s=0.025)
    assert n == int(32768 * 0.025 / 0.0026) // 4 * 4
    # a fast link (or an untimed one) gets the bound; a very slow one 8 x the small
    assert probe_large_bytes(32768, 1e-4, 1 << 20) == 1 << 20
    assert probe_large_bytes(32768, 0.0, 1 << 20) == 1 << 20
    assert probe_large_bytes(32768, 1.0, 1 << 20) == 8 * 32768
    assert probe_large_bytes(1000, 1.0, 4000) == 4000  # never above the bound


def test_bad_probe_sizes_are_refused():
    with pytest.raises(ValidationError, match="auto_probe_bytes"):
        CommConfig(auto_probe_bytes=(1 << 20, 1024))


def test_candidates_keep_their_guard():
    from scidl.comm.auto import candidate_config

    cfg = CommConfig(strategy="auto", warmup_steps=7, error_feedback=False)
    topk = candidate_config(cfg, "topk")
    assert (topk.strategy, topk.warmup_steps, topk.error_feedback) == ("topk", 7, True)


def test_a_rebuilt_bucket_keeps_the_candidate_its_parameters_agree_on():
    from scidl.comm.auto import by_parameter, planned

    choice = {0: "powersgd", 1: "fp16", 2: "dense"}
    keys = {0: (4, 5), 1: (2, 3), 2: (0, 1, -1)}
    params = by_parameter(choice, keys)
    assert params == {4: "powersgd", 5: "powersgd", 2: "fp16", 3: "fp16", 0: "dense",
                      1: "dense"}
    assert planned(1, (2, 3), choice, keys, params, "dense") == ("fp16", False)
    # DDP rebuilt its buckets: index 0 now holds what bucket 1 held, index 1 a mix
    assert planned(0, (3, 2), choice, keys, params, "dense") == ("fp16", False)
    assert planned(1, (5, 2), choice, keys, params, "dense") == ("dense", True)
    assert planned(3, (9,), choice, keys, params, "dense") == ("dense", True)  # unknown
    assert planned(0, (4, 5), {}, {}, {}, "dense") == ("dense", False)  # before any choice


def test_prior_buckets_group_parameters_last_to_first_up_to_the_cap():
    from scidl.comm.auto import prior_buckets

    shapes = [(100, 10), (100,), (50, 10), (50,), (20, 5)]  # 1000, 100, 500, 50, 100
    out = prior_buckets(shapes, cap_bytes=4 * 700, backward_s=0.35)
    assert [b.shapes for b in out] == [((20, 5), (50,), (50, 10)), ((100,),), ((100, 10),)]
    assert [b.numel for b in out] == [650, 100, 1000]
    assert [round(b.compute_s, 6) for b in out] == [0.13, 0.02, 0.2]  # by entries


def test_uniform_choice_follows_the_ladder_rules():
    from scidl.comm.auto import choose_uniform

    slow = choose_uniform(BUCKETS, Link(1e-4, 8 / 100e6), 4, CFG)
    fast = choose_uniform(BUCKETS, Link(1e-5, 8 / 100e9), 4, CFG)
    assert fast.choice == ["dense"] * 4 and fast.moves == 0
    assert len(set(slow.choice)) == 1 and slow.choice[0] != "dense" and slow.moves >= 1
    _, blocked, tail = simulate(BUCKETS, [[s] for s in _dense_seconds(Link(1e-4, 8 / 100e6))])
    assert slow.exposed_s < 0.5 * (blocked + tail)
    # a move that buys less than auto_min_gain of the step is not made
    strict = CommConfig(strategy="auto", auto_min_gain=0.99)
    assert choose_uniform(BUCKETS, Link(1e-4, 8 / 100e6), 4, strict).choice == ["dense"] * 4
    assert choose_uniform(BUCKETS, Link(1e-4, 8 / 100e6), 1, CFG).choice == ["dense"] * 4


def _fidelity(kept: dict[str, float], buckets=BUCKETS) -> list[dict[str, tuple[float, float, float]]]:
    """Per bucket: an exact update of squared norm = its entries (Adam's update is about
    one per entry) and, per candidate, one of the same norm whose squared cosine with it
    is ``kept[name]``."""
    return [{"": (b.numel, b.numel, b.numel),
             **{n: (math.sqrt(k) * b.numel, b.numel, b.numel) for n, k in kept.items()}}
            for b in buckets]


def test_a_compressor_that_keeps_little_of_the_update_is_not_taken():
    # the two lossy candidates whose δ the sums below give (a candidate without sums
    # would count as keeping the update whole)
    cfg = CommConfig(strategy="auto", auto_candidates=["dense", "fp16", "powersgd", "topk"])
    slow = Link(1e-4, 8 / 100e6)
    timed = choose(BUCKETS, slow, 4, cfg)
    assert "powersgd" in timed.choice and timed.kept == 1.0  # time alone: compress hard
    keeps = choose(BUCKETS, slow, 4, cfg, fidelity=_fidelity({"powersgd": 0.95, "topk": 0.5}))
    assert keeps.choice == timed.choice  # what is kept is nearly all: the same choice
    loses = choose(BUCKETS, slow, 4, cfg, fidelity=_fidelity({"powersgd": 0.05, "topk": 0.02}))
    assert "powersgd" not in loses.choice and "topk" not in loses.choice
    assert "fp16" in loses.choice and loses.kept == 1.0  # halving the bytes loses nothing
    # the decision's δ is the whole assignment's: by hand for PowerSGD on bucket 0 only
    from scidl.comm.fidelity import kept_share

    two = [BucketInfo(3, 0.0), BucketInfo(1, 0.0)]
    share = kept_share(["powersgd", "fp16"], _fidelity({"powersgd": 0.25}, two))
    assert math.isclose(share, (0.5 * 3 + 1) ** 2 / (4 * 4))


def test_a_candidate_carries_its_own_settings():
    from scidl.comm.auto import candidate_class, candidate_config
    from scidl.comm.config import split_candidate

    assert split_candidate("quant:quant_bits=4:quant_chunk=256") == (
        "quant", {"quant_bits": 4, "quant_chunk": 256})
    cfg = CommConfig(strategy="auto", quant_bits=8,
                     auto_candidates=["dense", "quant", "quant:quant_bits=4"])
    four = candidate_config(cfg, "quant:quant_bits=4")
    assert (four.strategy, four.quant_bits, four.error_feedback) == ("quant", 4, True)
    assert candidate_config(cfg, "quant").quant_bits == 8
    assert candidate_class("quant:quant_bits=4").name == "quant"
    # the two are priced apart: 4 bits send fewer bytes than 8
    one = [BucketInfo(1 << 20, 0.01, ((1024, 1024),))]
    from scidl.comm.auto import plan_seconds

    slow = Link(1e-4, 8 / 100e6)
    assert sum(plan_seconds("quant:quant_bits=4", cfg, one[0], 4, slow)) < sum(
        plan_seconds("quant", cfg, one[0], 4, slow))


def test_compression_work_blocks_the_backward_thread():
    b = [BucketInfo(10, 1.0), BucketInfo(10, 1.0)]
    # bucket 0 compresses for 0.3 s before its collective: the backward thread waits
    bwd, blocked, tail = simulate(b, [[0.5], [0.5]], [0.3, 0.0])
    assert (bwd, blocked) == (2.0, 0.3) and tail == pytest.approx(0.5)
    # a candidate whose encoding costs more than the link time it saves is not taken
    one = [BucketInfo(1 << 20, 0.01, ((1024, 1024),))]
    slow = Link(1e-4, 8 / 100e6)
    ladder = ["dense", "fp16"]
    free = choose(one, slow, 4, CFG, candidates=ladder)
    assert free.choice == ["fp16"]
    dear = choose(one, slow, 4, CFG, candidates=ladder, codec=[{"fp16": 10.0}])
    assert dear.choice == ["dense"]
    # priced work is part of the predicted exposed time
    kept = choose(one, slow, 4, CFG, candidates=ladder, codec=[{"fp16": 0.01}])
    assert kept.choice == ["fp16"] and kept.blocked_s == pytest.approx(0.01)


def test_with_the_update_priced_a_bucket_may_skip_past_a_candidate():
    # 4-bit integers keep nearly all of the update and cost less than PowerSGD's loss
    ladder = ["dense", "fp16", "quant", "quant:quant_bits=4", "powersgd"]
    cfg = CommConfig(strategy="auto", auto_candidates=ladder)
    one = [BucketInfo(1 << 20, 0.01, ((1024, 1024),))]
    slow = Link(1e-4, 8 / 100e6)
    timed = choose(one, slow, 4, cfg)
    assert timed.choice == ["powersgd"]  # time alone: the fewest bytes
    fid = [{"": (1.0, 1.0, 1.0), "powersgd": (0.3, 1.0, 1.0),
            "quant": (1.0, 1.0, 1.0), "quant:quant_bits=4": (0.99, 1.0, 1.0)}]
    priced = choose(one, slow, 4, cfg, fidelity=fid)
    assert priced.choice == ["quant:quant_bits=4"]
    assert priced.kept == pytest.approx(0.99 ** 2)


def test_provisional_choice_prices_the_gradient_kept():
    from scidl.comm.auto import choose_uniform

    ladder = ["dense", "fp16", "powersgd"]
    cfg = CommConfig(strategy="auto", auto_candidates=ladder)
    slow = Link(1e-4, 8 / 100e6)
    assert choose_uniform(BUCKETS, slow, 4, cfg).choice[0] == "powersgd"
    # a first look that finds PowerSGD keeps a tenth of the gradient: halve the bytes only
    low = choose_uniform(BUCKETS, slow, 4, cfg, kept={"powersgd": 0.1})
    assert low.choice[0] == "fp16" and low.kept == 1.0
    high = choose_uniform(BUCKETS, slow, 4, cfg, kept={"powersgd": 0.95})
    assert high.choice[0] == "powersgd" and high.kept == 0.95
    # its compression time, per entry, counts as well
    dear = choose_uniform(BUCKETS, slow, 4, cfg, kept={"powersgd": 0.95},
                          codec_per_entry={"powersgd": 1e-3})
    assert dear.choice[0] == "fp16"


def test_a_latency_bound_large_probe_grows_until_bandwidth_shows():
    # 1 Gbit/s, 4 ranks: 32 KiB took 4.7 ms, 256 KiB 5.6 ms: mostly latency, the fit
    # would read the link several times too fast; four times the bytes next
    assert grow_probe_bytes(262144, 0.0047, 0.0056, 1 << 20) == 1 << 20
    assert fit_link(32768, 0.0047, 262144, 0.0056, 4).beta < 0.5 * 8e-9
    # twice the small one's time or more: the large message will do
    assert grow_probe_bytes(1 << 20, 0.0047, 0.0126, 1 << 22) is None
    # never above the bound, and the bound stops the growth
    assert grow_probe_bytes(3 << 19, 0.0047, 0.005, 1 << 21) == 1 << 21
    assert grow_probe_bytes(1 << 20, 0.0047, 0.005, 1 << 20) is None
