"""The best evaluation so far of the headline metric, and early stopping.

:class:`BestTracker` is updated after each evaluation (on rank 0, which evaluates): a
value better than the best so far (lower, or higher when the workload's metric is
``higher_is_better``) becomes the best and the trainer publishes the model as the best
checkpoint. Early stopping counts the evaluations since the last one that beat the best
so far by more than ``min_delta``; after ``patience`` of them the run stops. A NaN/Inf
value is never an improvement. The tracker's state travels in every checkpoint, so a
resumed run keeps its best value, its step and the count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BestTracker", "improvement"]


def improvement(value: float, best: float | None, higher_is_better: bool) -> float:
    """How much ``value`` beats ``best`` in the metric's direction (inf when there is no
    best yet; negative or zero: no improvement; NaN values never improve)."""
    if not math.isfinite(value):
        return -math.inf
    if best is None:
        return math.inf
    return value - best if higher_is_better else best - value


@dataclass
class BestTracker:
    """Best value of ``metric`` so far, where it was reached, and evaluations since the
    last significant improvement (for ``patience``; None: no early stopping)."""

    metric: str
    higher_is_better: bool
    patience: int | None = None
    min_delta: float = 0.0
    value: float | None = None
    step: int | None = None
    stale: int = 0

    def update(self, value: float, step: int) -> tuple[bool, bool]:
        """Record the evaluation at ``step``; returns (it is the new best, stop now)."""
        gain = improvement(value, self.value, self.higher_is_better)
        self.stale = 0 if gain > self.min_delta else self.stale + 1
        new_best = gain > 0
        if new_best:
            self.value, self.step = float(value), step
        return new_best, self.patience is not None and self.stale >= self.patience

    def stop_message(self) -> str:
        """Why the run stops, in one line."""
        delta = f" by more than {self.min_delta:g}" if self.min_delta > 0 else ""
        return (f"early stop: {self.metric} has not improved{delta} for {self.stale} "
                f"evaluation(s) (train.early_stop_patience={self.patience}); best "
                f"{self.value:.4g} at step {self.step}")

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in ("value", "step", "stale")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value, step = state.get("value"), state.get("step")
        self.value = None if value is None else float(value)
        self.step = None if step is None else int(step)
        self.stale = int(state.get("stale", 0))
