"""``evolution``: multi-objective evolutionary search with NSGA-II.

Two objectives: the validation metric and the measured inference latency per sample
(minimised). NSGA-II (Deb et al. 2002) keeps a population ranked by non-domination and
crowding distance and breeds children by crossover and mutation; the result is the Pareto
front — every trial that no other trial beats on both objectives. This follows MENNDL's
asynchronous genetic search over CNN topologies with accuracy and inference cost as
objectives: with a shared storage, workers breed from whatever generation is complete.

The first generation (``population`` trials) is sampled at random: a budget of no more
trials than the population is a random search (``random_only_message``).
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from scidl.search.base import Searcher
from scidl.search.objective import Outcome
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


def random_only_message(trials: int, population: int) -> str | None:
    """A warning when the budget ends within NSGA-II's random first generation, else None."""
    if trials > population:
        return None
    return (f"--strategy evolution with {trials} trials and a population of {population} "
            "is a random search (the first generation is sampled at random); give more "
            "trials than --population, e.g. several generations")


class Evolution(Searcher):
    """NSGA-II over (metric, latency ms/sample)."""

    name = "evolution"
    multi_objective = True

    def directions(self, settings: SearchSettings) -> list[str]:
        return [settings.direction, "minimize"]

    def sampler(
        self, settings: SearchSettings, space: SearchSpace, seed: int
    ) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=settings.population, seed=seed)

    def values(self, outcome: Outcome, settings: SearchSettings) -> list[float]:
        if outcome.latency_ms is None:
            raise RuntimeError("evolution needs the inference latency; the objective gave none")
        return [outcome.value, outcome.latency_ms]

    def best_trials(self, study: optuna.Study) -> list[FrozenTrial]:
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return []
        # Re-evaluated duplicates tie on both objectives: keep the first of each point.
        seen: set[tuple[float, ...]] = set()
        front = []
        for t in sorted(study.best_trials, key=lambda t: (t.values[1], t.number)):
            if tuple(t.values) not in seen:
                seen.add(tuple(t.values))
                front.append(t)
        return front
