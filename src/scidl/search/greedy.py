"""``greedy``: constructive depth search ranked by a size-adjusted score.

After Lupo Pasini, Yin, Li & Eisenbach, "A greedy constructive algorithm for the
optimization of neural network architectures" (arXiv:1909.03306): search depth by depth,
starting shallow; at each depth sample ``per_depth`` networks with the width stratified
over its range (one random width in each of ``per_depth`` equal log-width bins; the
training hyperparameters — learning rate, batch size, optimizer, activation — by
univariate TPE over all finished trials, so that bad optimiser settings do not mask the
architecture's quality); go one layer deeper only while the best adjusted score
improves by more than ``tol`` (relative). When depth stops helping (or the maximum depth is
reached) the remaining budget refines the best depth with further stratified samples.

**Adjusted score.** For linear regression, adjusted R² = 1 − (1 − R²)(n − 1)/(n − p − 1)
penalises the parameter count p at n samples, but it diverges at p = n − 1 and changes sign
beyond, while neural networks routinely have p > n. We use

    e_adj = e · (1 + λ · ln(1 + p / (n − 1)))

where e is the error of the trial (1 − R² or 1 − accuracy for scores that are at most 1
and maximised; the metric itself for non-negative errors such as MSE) and λ the ``penalty``
weight. Why this form: (n − 1)/(n − p − 1) = 1 + p/(n − 1) + O((p/n)²) and
ln(1 + x) = x + O(x²), so with λ = 1 and p ≪ n it *is* the classical adjusted R² to first
order; for every λ it is finite, positive and increasing in p for all p ≥ 0 (defined when
parameters exceed samples); and it grows only logarithmically once p ≫ n. The default
λ = 0.1 counts a network's parameters at a tenth of a linear model's: a trained network's
effective degrees of freedom are far fewer than its weights (implicit regularisation of
SGD, early stopping), and with λ = 1 a network with p/n ≈ 100 would need a 4× smaller
error than one with p/n ≈ 0.4 to rank higher — it would always pick the tiniest network.
With λ = 0.1 a network ten times larger (p/n 1 → 10) must cut its error by about 14 % to
rank higher: size breaks near-ties, accuracy decides the rest. The score reported is
1 − e_adj for maximised metrics (an "adjusted R²/accuracy").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from scidl.search.base import Searcher
from scidl.search.objective import Outcome
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


def size_penalty(n_params: int, n_train: int | None, weight: float = 1.0) -> float:
    """The factor ``1 + λ ln(1 + p/(n − 1))`` (1 when n is unknown)."""
    if not n_train:
        return 1.0
    return 1.0 + weight * math.log1p(n_params / max(n_train - 1, 1))


def adjusted_error(
    value: float, maximize: bool, n_params: int, n_train: int | None, weight: float = 1.0
) -> float:
    """``e · (1 + λ ln(1 + p/(n−1)))`` with ``e = 1 − value`` (maximised) or ``value``."""
    err = max(1.0 - value, 0.0) if maximize else max(value, 0.0)
    return err * size_penalty(n_params, n_train, weight)


@dataclass(frozen=True)
class Plan:
    """Where the greedy search stands: the depth to sample next and whether it converged."""

    depth: int
    converged: bool
    best_by_depth: dict[int, float]


def greedy_plan(
    records: Sequence[tuple[int, float | None]], depths: Sequence[int], per_depth: int, tol: float
) -> Plan:
    """Decide the next depth from ``(depth, adjusted error or None if unfinished)`` records.

    Depth ``d`` is filled until ``per_depth`` trials were assigned; while they run, extra
    trials go to the same depth (no worker idles). Once all finished: go deeper if
    ``best(d) < best(d−1) · (1 − tol)`` (or ``d`` is the first depth), else converge on
    the best depth so far.
    """
    best: dict[int, float] = {}
    for d, v in records:
        if v is not None and math.isfinite(v):
            best[d] = min(best.get(d, math.inf), v)
    for i, d in enumerate(depths):
        assigned = sum(1 for dd, _ in records if dd == d)
        finished = sum(1 for dd, v in records if dd == d and v is not None)
        if assigned < per_depth or finished < per_depth:
            return Plan(d, False, best)
        prev = depths[i - 1] if i > 0 else None
        improved = prev is None or best.get(d, math.inf) < best.get(prev, math.inf) * (1 - tol)
        if not improved or i == len(depths) - 1:
            top = min(best, key=lambda k: best[k]) if best else d
            return Plan(top, True, best)
    return Plan(depths[-1], True, best)  # pragma: no cover - loop always returns


def width_stratum(low: float, high: float, log: bool, index: int, strata: int) -> tuple[float, float]:
    """Bounds of stratum ``index`` of ``strata`` equal bins of [low, high] (log or linear)."""
    k = index % strata
    if log:
        a, b = math.log(low), math.log(high)
        return math.exp(a + (b - a) * k / strata), math.exp(a + (b - a) * (k + 1) / strata)
    return low + (high - low) * k / strata, low + (high - low) * (k + 1) / strata


class GreedySampler(optuna.samplers.BaseSampler):
    """Greedy depth schedule + stratified width + TPE for the other parameters.

    The state lives in the storage (trials' depths and values), so any number of workers
    sharing the study follow one schedule.
    """

    def __init__(self, depth: str, width: str | None, per_depth: int, tol: float, seed: int) -> None:
        self.depth, self.width, self.per_depth, self.tol = depth, width, per_depth, tol
        self._rng = np.random.RandomState(seed)
        self._others = optuna.samplers.TPESampler(seed=seed, n_startup_trials=per_depth)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def _records(self, study: optuna.Study, exclude: int) -> list[tuple[int, float | None]]:
        out: list[tuple[int, float | None]] = []
        for t in study.get_trials(deepcopy=False):
            if t.number == exclude or self.depth not in t.params or t.state == TrialState.FAIL:
                continue
            done = t.state == TrialState.COMPLETE and t.values
            out.append((int(t.params[self.depth]), float(t.values[0]) if done else None))
        return out

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        if param_name == self.depth and isinstance(param_distribution, IntDistribution):
            dist = param_distribution
            depths = list(range(dist.low, dist.high + 1, dist.step))
            plan = greedy_plan(self._records(study, trial.number), depths, self.per_depth, self.tol)
            study._storage.set_trial_system_attr(trial._trial_id, "greedy_converged", plan.converged)
            return plan.depth
        if param_name == self.width and isinstance(param_distribution, IntDistribution) and self.depth in trial.params:
            d = int(trial.params[self.depth])
            index = sum(1 for dd, _ in self._records(study, trial.number) if dd == d)
            lo, hi = width_stratum(param_distribution.low, param_distribution.high + 1,
                                   param_distribution.log, index, self.per_depth)
            x = math.exp(self._rng.uniform(math.log(lo), math.log(hi))) if param_distribution.log else self._rng.uniform(lo, hi)
            return int(min(max(math.floor(x), param_distribution.low), param_distribution.high))
        return self._others.sample_independent(study, trial, param_name, param_distribution)


class Greedy(Searcher):
    """Greedy constructive search; the stored value is the adjusted error (minimised)."""

    name = "greedy"

    def directions(self, settings: SearchSettings) -> list[str]:
        return ["minimize"]

    def sampler(self, settings: SearchSettings, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        depth = space.param_with_role("depth")
        if depth is None or space.params[depth].type != "int":
            raise ValueError("greedy search needs an int parameter with 'role: depth' in the space")
        return GreedySampler(depth, space.param_with_role("width"), settings.per_depth, settings.tol, seed)

    def values(self, outcome: Outcome, settings: SearchSettings) -> list[float]:
        n = outcome.n_train if outcome.n_train is not None else settings.n_train
        return [adjusted_error(outcome.value, settings.direction == "maximize",
                               outcome.n_params, n, settings.penalty)]
