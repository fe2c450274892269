"""Sharded data parallelism (FSDP2, ``parallel.shard``) trains the same weights as DDP (gloo).
The runs are fsdp_runs.py's, shared with the checkpoint tests (fixtures in tests/conftest.py)."""

import pytest
from fsdp_runs import parity_cfg

from scidl.config import ConfigError
from scidl.parallel.fsdp import check_shard_layout, fsdp_step_bytes, shard_groups


@pytest.mark.timeout(600)  # the first user starts the shared groups (conftest.py)
@pytest.mark.parametrize("world", [2, 4])
def test_fsdp_matches_ddp_after_20_steps(request, world):
    _, ranks = request.getfixturevalue("fsdp_two" if world == 2 else "fsdp_four")
    out = [dict(r["parity"]) for r in ranks]
    if world == 2:  # rank 1's 3rd loss (step 3) is NaN: both ranks skip step 3 alone
        assert [o.pop("nan") for o in out] == [{"skipped": 1, "rows": [0, 0, 1]}] * 2
    for shard, r in out[0].items():
        assert r["diff"] < 1e-5, (shard, r["diff"])  # fp32 rounding of a different reduction order
        assert r["eval"] is not None  # rank 0 evaluated the gathered model
        assert all(g is not None and g > 0 for g in r["grad_norm"])
    full = [o["full"] for o in out]
    assert sum(f["local"] for f in full) >= full[0]["total"]  # each rank holds about 1/world
    assert max(f["local"] for f in full) <= full[0]["total"] // world + 16
    if world == 4:  # hybrid: shards of 2 ranks, replicated twice
        assert out[0]["hybrid"]["local"] <= out[0]["hybrid"]["total"] // 2 + 16


def test_shard_layout_checks_name_the_key():
    cfg = parity_cfg("/tmp/unused", "parallel.shard=full", "comm.strategy=topk")
    with pytest.raises(ConfigError, match="comm.strategy=topk does not apply with parallel.shard=full"):
        check_shard_layout(cfg, 2)
    cfg = parity_cfg("/tmp/unused", "parallel.shard=full", "parallel.pipeline_stages=2")
    with pytest.raises(ConfigError, match="does not compose with parallel.pipeline_stages=2"):
        check_shard_layout(cfg, 4)
    cfg = parity_cfg("/tmp/unused", "parallel.shard=hybrid", "parallel.shard_size=3")
    with pytest.raises(ConfigError, match="parallel.shard_size=3 does not divide"):
        check_shard_layout(cfg, 4)
    with pytest.raises(ConfigError, match="needs parallel.shard=hybrid"):
        check_shard_layout(parity_cfg("/tmp/unused", "parallel.shard_size=2"), 4)
    # 4 kB of fp32 parameters on 4 ranks (ring): 2 all-gathers of 3 x 1 kB, a 3/4 x 4 kB reduce-scatter
    assert fsdp_step_bytes(4096, 4, 1) == 2 * 3 * 1024 + 3 * 1024
    # hybrid 2 x 2, bf16 gradients: 2 x 2 kB gathered, 1 kB reduce-scattered, 1 kB shard all-reduced
    assert fsdp_step_bytes(4096, 2, 2, grad_elem_bytes=2) == 2 * 2048 + 1024 + 1024
    assert shard_groups(8, "hybrid", None, 4) == (2, 4)
    assert shard_groups(8, "full", None, 4) == (1, 8)
    check_shard_layout(parity_cfg("/tmp/unused", "parallel.shard=full", "comm.strategy=bf16"), 2)
