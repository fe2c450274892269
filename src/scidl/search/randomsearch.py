"""``random``: independent uniform sampling of the space (the baseline)."""

from __future__ import annotations

import optuna

from scidl.search.base import Searcher
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace


class RandomSearch(Searcher):
    """Every trial drawn independently from the space's distributions."""

    name = "random"

    def sampler(
        self, settings: SearchSettings, space: SearchSpace, seed: int
    ) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)
