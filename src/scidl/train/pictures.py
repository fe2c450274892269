"""A workload's own pictures of the trained model, drawn once training has ended.

After :meth:`Trainer.fit <scidl.train.trainer.Trainer.fit>`, :func:`draw_after_fit` hands a
copy of the whole model — the best checkpoint's weights when the run kept one, else the
final ones — to the workload's :meth:`~scidl.workloads.base.Workload.pictures` hook on
rank 0, which writes PNG files into ``RUN_DIR/pictures/``. Pictures never fail a run: an
error in the hook is one warning line. ``log.pictures=false`` turns them off.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from scidl.workloads.base import Task, Workload

if TYPE_CHECKING:
    from scidl.config import RunConfig
    from scidl.train.trainer import Trainer

__all__ = ["PICTURES_DIR", "draw_after_fit", "draw_pictures", "has_pictures", "picture_model"]

PICTURES_DIR = "pictures"  # inside the run folder


def has_pictures(workload: Workload) -> bool:
    """Whether ``workload`` overrides the (empty) default :meth:`Workload.pictures`."""
    return type(workload).pictures is not Workload.pictures


def picture_model(model: nn.Module, run_dir: Path) -> tuple[nn.Module, str]:
    """A copy of ``model`` in eval mode holding the best checkpoint's weights when
    ``run_dir`` has one (else the final weights), and which weights those are."""
    from scidl.train import checkpoint as ckpt

    net = copy.deepcopy(model)
    best = ckpt.latest_best(run_dir / "checkpoints", warn=False)
    source = "final model"
    if best is not None:
        net.load_state_dict(best.load())
        source = f"best model, step {best.step}"
    return net.eval(), source


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def draw_pictures(workload: Workload, cfg: Any, model: nn.Module, task: Task,
                  run_dir: Path) -> tuple[list[Path], str]:
    """Run the workload's hook on a copy of ``model`` (rank 0): the PNGs written and which
    weights they show; no files and one warning when the hook fails."""
    try:
        net, source = picture_model(model, run_dir)
        return [Path(p) for p in workload.pictures(cfg, net, task, run_dir / PICTURES_DIR)], source
    except Exception as e:  # a picture is never worth a failed run
        warnings.warn(f"{workload.name or 'workload'} pictures not drawn ({_one_line(e)}); "
                      "the run itself is fine (log.pictures=false turns them off)", stacklevel=2)
        return [], ""


def draw_after_fit(cfg: RunConfig, trainer: Trainer, task: Task, run_dir: Path,
                   own_task: bool) -> tuple[list[Path], str]:
    """After ``fit`` (call on every rank: the plan may gather the weights to rank 0): the
    workload's pictures and which weights they show, on rank 0; nothing for a Python task
    factory (``own_task``), with ``log.pictures=false``, or for a workload without pictures."""
    if own_task or not cfg.log.pictures:
        return [], ""
    from scidl.workloads import get_workload

    workload = get_workload(cfg.workload)
    if not has_pictures(workload):
        return [], ""
    model = trainer.plan.eval_model()
    if model is None:  # not rank 0
        return [], ""
    return draw_pictures(workload, cfg.task_config(), model, task, run_dir)
