"""The search-strategy contract and its registry.

A strategy decides three things for a study: the objective directions, the Optuna
sampler (and pruner) that proposes trials, and how a trial's :class:`Outcome` becomes
the values Optuna stores. Everything else (storage, workers, crash safety, reports) is
shared by all strategies in ``runner.py``/``worker.py``.

Lifecycle: ``directions(settings)`` once when the study is created; in each worker
``sampler(settings, space, seed)`` and ``pruner(settings)`` once; ``values(outcome,
settings)`` after each finished trial; ``best_trials(study)`` for the report.
"""

from __future__ import annotations

import abc
import difflib
import importlib
from typing import ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from scidl.search.objective import Outcome
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


class Strategy(abc.ABC):
    """Base class of search strategies (single objective, no pruning by default)."""

    name: ClassVar[str] = ""
    multi_objective: ClassVar[bool] = False

    def directions(self, settings: SearchSettings) -> list[str]:
        return [settings.direction]

    @abc.abstractmethod
    def sampler(
        self, settings: SearchSettings, space: SearchSpace, seed: int
    ) -> optuna.samplers.BaseSampler:
        """The Optuna sampler that proposes this strategy's trials."""

    def pruner(self, settings: SearchSettings) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()

    def values(self, outcome: Outcome, settings: SearchSettings) -> list[float]:
        return [outcome.value]

    def best_trials(self, study: optuna.Study) -> list[FrozenTrial]:
        """The best trial (a one-element list), or the Pareto front when multi-objective."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return []
        return [study.best_trial]


_BUILTIN: dict[str, str] = {
    "greedy": "scidl.search.greedy:Greedy",
    "evolution": "scidl.search.evolution:Evolution",
    "bayes": "scidl.search.bayes:Bayes",
    "random": "scidl.search.randomsearch:RandomSearch",
}


def strategy_names() -> list[str]:
    return sorted(_BUILTIN)


def get_strategy(name: str) -> Strategy:
    """A fresh strategy instance by name (KeyError lists the choices)."""
    if name not in _BUILTIN:
        close = difflib.get_close_matches(name, list(_BUILTIN), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown search strategy {name!r}{hint}; choices: {', '.join(strategy_names())}")
    module, _, attr = _BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), attr)()
