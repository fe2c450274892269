"""A synthetic objective with known optimum, for tests and dry runs of the machinery.

It pretends to train an MLP on ``n_train`` samples with 8 inputs and 1 output: its
"accuracy" is a smooth closed-form function of ``depth``, ``width`` and ``lr`` (best at
depth 2, wide enough, lr near 3e-3), its parameter count is the MLP's, its "latency" is
proportional to the parameter count, and each trial sleeps ``seconds`` split over
``steps`` reports (so pruning, heartbeats and killed workers can be exercised).
"""

from __future__ import annotations

import math
import time
from typing import Any

import optuna

from scidl.search.objective import Outcome, can_report
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace

TOY_SPACE: dict[str, Any] = {
    "params": {
        "depth": {"type": "int", "low": 1, "high": 4, "role": "depth"},
        "width": {"type": "int", "low": 2, "high": 128, "log": True, "role": "width"},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    }
}


def toy_params(depth: int, width: int, n_in: int = 8, n_out: int = 1) -> int:
    """Parameters of an ``n_in → [width]*depth → n_out`` MLP (weights + biases)."""
    sizes = [n_in] + [width] * depth + [n_out]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def toy_accuracy(depth: int, width: int, lr: float) -> float:
    """Closed-form "validation accuracy": capacity saturates with width, depth 2 is best."""
    capacity = 1.0 - math.exp(-width / 12.0)
    depth_term = 0.04 * (1.0 - abs(depth - 2) / 2.0)
    lr_term = 0.03 * (math.log10(lr) + 2.5) ** 2
    return 0.85 + 0.08 * capacity + depth_term - lr_term


class ToyObjective:
    """Synthetic objective (see module docstring); ``fail_if`` lists depths that raise."""

    def __init__(
        self, settings: SearchSettings, seconds: float = 0.0, steps: int = 4,
        n_train: int = 200, fail_depths: tuple[int, ...] = (),
    ) -> None:
        self.settings, self.seconds, self.steps = settings, seconds, steps
        self.n_train, self.fail_depths = n_train, tuple(fail_depths)

    def describe(self) -> tuple[str, bool, int | None]:
        return "accuracy", True, self.n_train

    def __call__(self, trial: optuna.Trial, space: SearchSpace) -> Outcome:
        p = space.suggest(trial)
        depth, width, lr = int(p.get("depth", 2)), int(p.get("width", 16)), float(p.get("lr", 3e-3))
        if depth in self.fail_depths:
            raise RuntimeError(f"toy failure at depth {depth}")
        final = toy_accuracy(depth, width, lr)
        for step in range(self.steps):
            time.sleep(self.seconds / self.steps)
            if not can_report(trial):
                continue
            # the curve rises towards its final value, so pruning has something to compare
            trial.report(final - 0.1 * (self.steps - 1 - step) / self.steps, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        n_params = toy_params(depth, width)
        return Outcome(
            value=final, metrics={"accuracy": final}, n_params=n_params, n_train=self.n_train,
            latency_ms=1e-4 * n_params, run_dir=None, config={"toy": p},
        )
