"""Collapsed (snapshot) ensembles: one training budget, several models, averaged predictions.

After Huang et al. 2017 (snapshot ensembles) and Codreanu et al. 2017 (arXiv 1711.04291,
"collapsed ensembles"): train with the ``cyclic`` schedule (``optim.schedule=cyclic``,
``optim.cycles=M``); the learning rate anneals to its floor at the end of each cycle, where
:class:`SnapshotCollector` (a trainer callback) copies the weights. :class:`SnapshotEnsemble`
is an ``nn.Module`` whose output averages the snapshots,

    p(y|x) = (1/M) sum_m softmax(f_m(x))   (classification; returns log p),
    y(x)   = (1/M) sum_m f_m(x)            (regression),

so a workload's ``evaluate`` scores the ensemble as one model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from scidl.runtime.dist import unwrap_model


class SnapshotCollector:
    """Trainer callback: copy the model's weights (to CPU) after the given optimizer steps.

    Args:
        steps: optimizer-step counts after which to snapshot, e.g.
            ``scidl.optim.schedules.cycle_end_steps(cfg.optim, total_steps)``.
    """

    def __init__(self, steps: Iterable[int]) -> None:
        self.steps = sorted(set(int(s) for s in steps))
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.taken_at: list[int] = []

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        if trainer.step in self.steps and trainer.step not in self.taken_at:
            self.take(trainer.model, trainer.step)

    def take(self, model: nn.Module, step: int) -> None:
        """Store a CPU copy of ``model``'s state (also usable without a trainer)."""
        sd = unwrap_model(model).state_dict()
        self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in sd.items()})
        self.taken_at.append(step)


class SnapshotEnsemble(nn.Module):
    """Average the outputs of several copies of one architecture.

    Args:
        template: a module of the snapshots' architecture (copied, not modified).
        states: the snapshots' state dicts.
        kind: ``classification`` averages softmax probabilities and returns their log
            (argmax and cross-entropy work as for logits); ``regression`` averages outputs.
    """

    def __init__(
        self, template: nn.Module, states: Sequence[dict[str, torch.Tensor]],
        kind: Literal["classification", "regression"] = "classification",
    ) -> None:
        super().__init__()
        if not states:
            raise ValueError("SnapshotEnsemble needs at least one snapshot")
        members = []
        for sd in states:
            m = copy.deepcopy(unwrap_model(template))
            m.load_state_dict(sd)
            members.append(m)
        self.members = nn.ModuleList(members)
        self.kind = kind

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        outs = [m(*args, **kwargs) for m in self.members]
        if self.kind == "classification":
            probs = torch.stack([torch.softmax(o, dim=-1) for o in outs]).mean(0)
            return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
        return torch.stack(outs).mean(0)
