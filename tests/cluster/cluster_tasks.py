"""Task factories for the cluster tests (importable by the node launchers' workers)."""

from __future__ import annotations


def digits_slow(ctx):
    """digits with steps of at least 0.4 s: a window to kill a node mid-run."""
    import time

    from scidl.config import load_config
    from scidl.workloads import get_workload

    task = get_workload("digits").build(load_config("digits").task_config(), ctx)
    inner = task.loss

    def loss(model, batch):
        time.sleep(0.4)
        return inner(model, batch)

    task.loss = loss
    return task
