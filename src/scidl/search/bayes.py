"""``bayes``: model-based HPO — TPE or a Gaussian process — with pruning.

TPE (Bergstra et al. 2011) models p(x | good) / p(x | bad) with Parzen estimators; with
parallel workers the ``constant_liar`` option treats running trials as bad so that
workers do not all propose the same point. ``sampler: gp`` uses Optuna's GPSampler
(Matérn-5/2 GP with log expected improvement). Unpromising trials stop early with the
median rule (stop if the intermediate value is worse than the median of earlier trials at
the same step) or asynchronous successive halving (``sha``; promote the top 1/η per rung).
"""

from __future__ import annotations

import optuna

from scidl.search.base import Searcher
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


class Bayes(Searcher):
    """TPE (default) or GP sampler; median or successive-halving pruner."""

    name = "bayes"

    def sampler(
        self, settings: SearchSettings, space: SearchSpace, seed: int
    ) -> optuna.samplers.BaseSampler:
        startup = max(3, min(10, settings.trials // 4))
        if settings.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True
        )

    def pruner(self, settings: SearchSettings) -> optuna.pruners.BasePruner:
        if settings.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if settings.pruner == "sha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        return optuna.pruners.NopPruner()
