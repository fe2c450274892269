"""The searcher contract and its registry.

A searcher (the search *method*: ``greedy``, ``evolution``, ``bayes``, ``random``; chosen
by ``scidl search --strategy``, stored as ``SearchSettings.strategy``) decides three
things for a study: the objective directions, the Optuna
sampler (and pruner) that proposes trials, and how a trial's :class:`Outcome` becomes
the values Optuna stores. Everything else (storage, workers, crash safety, reports) is
shared by all searchers in ``runner.py``/``worker.py``.

Lifecycle: ``directions(settings)`` once when the study is created; in each worker
``sampler(settings, space, seed)`` and ``pruner(settings)`` once; ``values(outcome,
settings)`` after each finished trial; ``best_trials(study)`` for the report.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from scidl.registry import Registry
from scidl.search.objective import Outcome
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


class Searcher(abc.ABC):
    """Base class of search methods (single objective, no pruning by default).

    Named ``Searcher`` so that "strategy" in code means a gradient-communication
    strategy (:class:`scidl.comm.CommStrategy`) only.
    """

    name: ClassVar[str] = ""
    multi_objective: ClassVar[bool] = False

    def directions(self, settings: SearchSettings) -> list[str]:
        return [settings.direction]

    @abc.abstractmethod
    def sampler(
        self, settings: SearchSettings, space: SearchSpace, seed: int
    ) -> optuna.samplers.BaseSampler:
        """The Optuna sampler that proposes this searcher's trials."""

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


SEARCHERS: Registry[type[Searcher]] = Registry("search strategy", {
    "greedy": "scidl.search.greedy:Greedy",
    "evolution": "scidl.search.evolution:Evolution",
    "bayes": "scidl.search.bayes:Bayes",
    "random": "scidl.search.randomsearch:RandomSearch",
}, group="scidl.search")


def searcher_names() -> list[str]:
    """Every registered search method, sorted."""
    return SEARCHERS.names()


def get_searcher(name: str) -> Searcher:
    """A fresh searcher by name (RegistryError lists the choices)."""
    return SEARCHERS.get(name)()


# The names before searchers had their own word; kept for existing callers.
get_strategy = get_searcher
strategy_names = searcher_names
