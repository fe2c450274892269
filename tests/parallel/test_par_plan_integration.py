"""The parallel plan's device mesh: groups and rank coordinates as the layout says (gloo, CPU)."""

import pytest
import torch
import torch.distributed as dist

from scidl.parallel.plan import ParallelDims
from scidl.testing import run_distributed


def _mesh_groups(rank, world, pp):
    torch.set_num_threads(1)
    dims = ParallelDims(world, pp)
    mesh = dims.build_mesh("cpu")
    return {
        "coordinate": dict(zip(dims.names, mesh.get_coordinate(), strict=True)),
        "expected": dims.coordinate(rank),
        "pp": dist.get_process_group_ranks(mesh.get_group("pp")),
        "dp": dist.get_process_group_ranks(mesh.get_group("dp")),
        "pp_expected": dims.group_ranks(rank, "pp"),
        "dp_expected": dims.group_ranks(rank, "dp"),
        "dp_is_world": mesh.get_group("dp") is dist.group.WORLD,
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pp", [1, 2])
def test_mesh_places_rank_r_at_stage_r_mod_pp_of_replica_r_div_pp(pp):
    out = run_distributed(_mesh_groups, 4, pp, timeout=100)
    for rank, r in enumerate(out):
        assert r["coordinate"] == r["expected"] == {"dp": rank // pp, "pp": rank % pp}
        assert r["pp"] == r["pp_expected"] and r["dp"] == r["dp_expected"]
        # pure data parallelism reduces over the default group, as before the mesh
        assert r["dp_is_world"] == (pp == 1)
