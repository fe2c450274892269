"""A job for the cluster tests: train a tiny workload once per communication strategy
in one launch (one process start-up for all of them), on the node layout the
environment describes (``PET_NNODES``/``PET_NODE_RANK``/``PET_RDZV_ENDPOINT``, as
torchrun takes them; none: one node).

    python -m cluster_job OUT_ROOT NPROC STRATEGY...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

STEPS = 4


def config(strategy: str, run_dir: Path) -> dict[str, Any]:
    from scidl.config import load_config

    return load_config("digits", overrides=[
        f"train.max_steps={STEPS}", f"checkpoint.every_steps={STEPS}", "train.batch_size=16",
        "log.tensorboard=false", "log.progress=false", "dist.timeout_s=60",
        "dist.device=cpu", "dist.backend=gloo", "dist.threads_per_proc=1",
        f"comm.strategy={strategy}", f"log.run_dir={run_dir}", f"log.root={run_dir.parent}",
    ]).to_dict()


def worker(cfgs: list[dict[str, Any]]) -> list[int]:
    """One rank: one process group for every strategy's training in turn."""
    import torch

    from scidl.runtime.dist import distributed_context
    from scidl.train.api import train_process

    torch.set_num_threads(1)
    with distributed_context("cpu", "gloo", 60):
        return [train_process(c)["steps"] for c in cfgs]


def main(argv: list[str]) -> None:
    from scidl.runtime.launch import elastic_run, node_spec

    out, nproc, strategies = Path(argv[0]), int(argv[1]), argv[2:]
    nodes = node_spec(nproc=nproc)
    cfgs = [config(s, out / s) for s in strategies]
    elastic_run(worker, (cfgs,), nproc, 0, nodes)


if __name__ == "__main__":
    main(sys.argv[1:])
