"""``scidl.comm.fidelity``: compressors with error feedback and the optimizer's update,
against closed forms and torch's own optimizers."""

from __future__ import annotations

import math

import pytest
import torch

from scidl.comm.fidelity import EFCompressor, UpdateShadow, cosine, powersgd_approx, topk_approx


def test_one_power_iteration_recovers_a_matrix_of_that_rank():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 9, generator=g, dtype=torch.float64)
    approx, q = powersgd_approx(m, torch.randn(9, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(approx, m, atol=1e-10) and q.shape == (9, 3)


def test_topk_keeps_exactly_the_largest_entries():
    x = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -0.05])
    assert topk_approx(x, 0.25).tolist() == [0.0, -5.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    assert topk_approx(x, 0.01).count_nonzero() == 1  # at least one entry


@pytest.mark.parametrize("kind", ["powersgd", "topk"])
def test_error_feedback_conserves_what_is_not_yet_sent(kind):
    g = torch.Generator().manual_seed(1)
    comp = EFCompressor(kind, rank=1, density=0.1)
    grads = [[torch.randn(6, 5, generator=g, dtype=torch.float64),
              torch.randn(5, generator=g, dtype=torch.float64)] for _ in range(4)]
    sent = [comp.compress(gs) for gs in grads]
    for i in range(2):  # everything given = everything sent + what is still held back
        given = sum(gs[i] for gs in grads)
        total = sum(s[i] for s in sent) + comp._residual[i]
        assert torch.allclose(given, total, atol=1e-12)
    if kind == "powersgd":  # a vector is not worth compressing: sent whole, nothing held
        assert torch.equal(comp._residual[1], torch.zeros(5, dtype=torch.float64))
        assert torch.linalg.matrix_rank(sent[0][0]) == 1


def _torch_updates(opt_cls, kwargs, grads):
    """The step torch's optimizer takes at lr 1 for each gradient of ``grads``."""
    p = torch.zeros_like(grads[0], requires_grad=True)
    opt = opt_cls([p], lr=1.0, **kwargs)
    out = []
    for gr in grads:
        before = p.detach().clone()
        p.grad = gr.clone()
        opt.step()
        out.append(before - p.detach())
    return out


def test_sgd_shadow_is_torch_sgd_momentum_buffer():
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(5)]
    ref = _torch_updates(torch.optim.SGD, {"momentum": 0.9}, grads)
    sh = UpdateShadow("sgd", momentum=0.9)
    for gr, r in zip(grads, ref, strict=True):
        assert torch.allclose(sh.update([gr])[0], r, atol=1e-12)


def test_adam_shadow_is_torch_adam_step():
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(7, generator=g, dtype=torch.float64) * 10 ** -i for i in range(5)]
    ref = _torch_updates(torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8}, grads)
    sh = UpdateShadow("adam")
    for gr, r in zip(grads, ref, strict=True):
        assert torch.allclose(sh.update([gr])[0], r, rtol=1e-9, atol=1e-12)


def test_cosine_of_tensor_lists():
    a = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    b = [torch.tensor([1.0, 1.0]), torch.tensor([0.0])]
    assert math.isclose(cosine(a, b), 1 / math.sqrt(2))
    assert cosine(a, [torch.zeros(2), torch.zeros(1)]) == 0.0


def test_adam_magnifies_a_compressors_error_in_small_coordinates():
    """The reason the measure is taken after the optimizer: a compressor that drops the
    small coordinates keeps nearly all of an SGD update but far less of Adam's, which
    scales every coordinate to a similar size."""
    g = torch.Generator().manual_seed(4)
    scale = torch.cat([torch.full((10,), 10.0), torch.full((990,), 0.1)]).double()
    sgd, adam = {}, {}
    for name, shadows in (("sgd", sgd), ("adam", adam)):
        comp = EFCompressor("topk", density=0.01)
        exact, fed = UpdateShadow(name), UpdateShadow(name)  # type: ignore[arg-type]
        cos = []
        for _ in range(20):
            gr = torch.randn(1000, generator=g, dtype=torch.float64) * scale
            cos.append(cosine(exact.update([gr]), fed.update(comp.compress([gr]))))
        shadows["cos"] = sum(cos[5:]) / 15
    assert sgd["cos"] > 0.9 and adam["cos"] < 0.6


def test_tracker_sums_and_kept_share():
    from scidl.comm.fidelity import EXACT, FidelityTracker, kept_share, update_rule

    g = torch.Generator().manual_seed(5)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], betas=(0.8, 0.99), eps=1e-6)
    rule = update_rule(opt)
    assert rule is not None and rule().betas == (0.8, 0.99) and rule().eps == 1e-6
    assert update_rule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1,
                                       momentum=0.5))().momentum == 0.5
    assert update_rule(torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])) is None
    tr = FidelityTracker(rule, {"exact_rank": lambda: EFCompressor("powersgd", rank=2),
                                "topk": lambda: EFCompressor("topk", density=0.05)}, count_from=3)
    u = torch.randn(8, 2, generator=g, dtype=torch.float64)
    for step in range(1, 6):  # rank-2 gradients: one power iteration at rank 2 is exact
        m = u @ torch.randn(2, 6, generator=g, dtype=torch.float64)
        tr.observe(0, (0,), [m], step)
    (sums,) = tr.sums(1)
    d, e, c = sums["exact_rank"]
    assert math.isclose(d, e, rel_tol=1e-9) and math.isclose(c, e, rel_tol=1e-9)
    assert sums[EXACT] == (e, e, e)
    assert math.isclose(kept_share(["exact_rank"], [sums]), 1.0, rel_tol=1e-9)
    assert kept_share(["topk"], [sums]) < 0.9  # 1 entry of 48 per step
    assert kept_share(["dense"], [sums]) == 1.0  # no model: the update kept whole
    assert tr.sums(2)[1] == {}  # a bucket never observed
    tr.observe(0, (0, 1), [m], 2)  # the bucket was rebuilt: it starts afresh
    assert tr.sums(1)[0] == {}


def test_quant_model_holds_back_only_rounding_on_both_sides():
    g = torch.Generator().manual_seed(5)
    comp = EFCompressor("quant", bits=8, chunk=16)
    grads = [[torch.randn(6, 5, generator=g), torch.randn(5, generator=g)] for _ in range(4)]
    sent = [comp.compress(gs) for gs in grads]
    given = torch.cat([sum(gs[i] for gs in grads).reshape(-1) for i in range(2)])
    total = torch.cat([sum(s[i] for s in sent).reshape(-1) for i in range(2)])
    held = torch.cat([r.reshape(-1) for r in comp._residual])
    assert comp._server is not None
    # what was given = what was sent + the workers' residual + the owner's residual
    assert torch.allclose(given, total + held + comp._server[:35], atol=1e-5)
    assert float(held.abs().max()) <= float(given.abs().max()) / 127  # half a step at most
    assert cosine(sent[-1], grads[-1]) > 0.999
    four = EFCompressor("quant", bits=4, chunk=16)
    assert cosine(four.compress(grads[0]), grads[0]) < cosine(
        EFCompressor("quant", bits=8, chunk=16).compress(grads[0]), grads[0])


def test_each_strategy_describes_its_own_compression_model():
    from scidl.comm import CommConfig, build_strategy, get_strategy_class

    for name in ("dense", "fp16", "bf16", "hierarchical", "dgc", "topk_adam"):
        assert get_strategy_class(name).compression_model(CommConfig(strategy=name)) is None
    made = {name: get_strategy_class(name).compression_model(
        CommConfig(strategy=name, rank=2, density=0.05, quant_bits=4))()
        for name in ("powersgd", "topk", "quant")}
    assert (made["powersgd"].kind, made["powersgd"].rank) == ("powersgd", 2)
    assert (made["topk"].kind, made["topk"].density) == ("topk", 0.05)
    assert (made["quant"].kind, made["quant"].bits) == ("quant", 4)
    # auto asks each candidate for its model: a candidate that describes one is priced
    auto = build_strategy(CommConfig(strategy="auto",
                                     auto_candidates=["dense", "fp16", "quant", "powersgd"]))
    assert auto._compressor_maker("dense") is None
    assert auto._compressor_maker("quant")().kind == "quant"

    class Custom(type(auto.inner["fp16"])):
        @classmethod
        def compression_model(cls, cfg):
            return lambda: EFCompressor("topk", density=0.5)

    auto.inner["fp16"] = Custom(auto.inner["fp16"].cfg)
    assert auto._compressor_maker("fp16")().density == 0.5


def test_tracker_times_each_compression_and_first_look_prices_the_gradient():
    from scidl.comm.fidelity import FidelityTracker, first_look, update_rule

    g = torch.Generator().manual_seed(7)
    rule = update_rule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1,
                                       momentum=0.9))
    makers = {"psgd": lambda: EFCompressor("powersgd", rank=1),
              "q8": lambda: EFCompressor("quant", bits=8, chunk=16)}
    tr = FidelityTracker(rule, makers, count_from=2)
    for step in range(1, 5):
        tr.observe(0, (0,), [torch.randn(16, 8, generator=g)], step)
    (codec,) = tr.codec(1)
    assert set(codec) == {"psgd", "q8"} and all(v > 0 for v in codec.values())
    assert tr.codec(2)[1] == {}
    grads = [torch.randn(32, 16, generator=g), torch.randn(16, generator=g)]
    kept, per_entry = first_look(grads, makers)
    # 8-bit blocks keep nearly all of a gradient; one rank-1 factor of a random matrix little
    assert kept["q8"] > 0.999 and kept["psgd"] < 0.5
    # rank 1 of the 32×16 matrix by hand (the vector is sent whole): cos² of P Qᵀ with it
    m, q = grads[0], None
    from scidl.comm.fidelity import powersgd_approx

    q = torch.randn(16, 1, generator=torch.Generator().manual_seed(0))
    approx, _ = powersgd_approx(m, q)
    assert kept["psgd"] == pytest.approx(cosine([approx, grads[1]], grads) ** 2, rel=1e-5)
    assert set(per_entry) == {"q8", "psgd"} and all(v > 0 for v in per_entry.values())


def test_a_large_bucket_is_measured_on_a_scaled_sample_of_its_tensors():
    from scidl.comm.fidelity import FidelityTracker, sample_tensors, update_rule

    assert sample_tensors([10, 20, 30], 0, seed=1) == [0, 1, 2]  # no bound
    assert sample_tensors([10, 20, 30], 60, seed=1) == [0, 1, 2]  # it fits
    one = sample_tensors([10, 20, 30], 25, seed=1)
    assert sum([10, 20, 30][i] for i in one) <= 25 and one == sample_tensors([10, 20, 30], 25, 1)
    assert len(sample_tensors([100, 200], 5, seed=0)) == 1  # at least one tensor
    rule = update_rule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1,
                                       momentum=0.9))
    g = torch.Generator().manual_seed(3)
    steps = [[torch.randn(8, 4, generator=g), torch.randn(16, 8, generator=g)] for _ in range(4)]
    makers = {"psgd": lambda: EFCompressor("powersgd", rank=1, seed=0)}
    (i,) = sample_tensors([32, 128], 130, seed=0)  # one of the two fits the bound
    capped = FidelityTracker(rule, makers, count_from=1, max_entries=130)
    alone = FidelityTracker(rule, makers, count_from=1)
    for t, gs in enumerate(steps, start=1):
        capped.observe(0, (0, 1), gs, t)
        alone.observe(0, (i,), [gs[i]], t)
    got, ref = capped.sums(1)[0], alone.sums(1)[0]
    scale = (32 + 128) / [32, 128][i]  # the bucket's entries over the sample's
    for name in ref:
        assert got[name] == pytest.approx(tuple(scale * v for v in ref[name]), rel=1e-6)
