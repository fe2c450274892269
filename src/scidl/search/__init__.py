"""Architecture and hyperparameter search on shared Optuna storage.

Searchers (``greedy``, ``evolution``, ``bayes``, ``random``) propose trials; every trial
runs the normal training path; every trial and result lives in an Optuna storage (SQLite
file, journal file, or PostgreSQL), so any number of workers share one study and a killed
worker loses nothing. Entry points: :func:`run_search` (Python), ``scidl search`` (CLI).
"""

from scidl.search.base import (
    Searcher,
    get_searcher,
    get_strategy,
    searcher_names,
    strategy_names,
)
from scidl.search.greedy import adjusted_error, greedy_plan, size_penalty
from scidl.search.objective import (
    ObjectiveError,
    Outcome,
    TrainObjective,
    measure_latency_ms,
    objective_names,
    register_objective,
)
from scidl.search.runner import SearchResult, describe_objective, run_search
from scidl.search.settings import SearchSettings
from scidl.search.space import DEFAULT_SPACES, SearchSpace, build_space, load_space
from scidl.search.storage import normalize_url, open_storage
from scidl.search.worker import work

__all__ = [
    "DEFAULT_SPACES",
    "ObjectiveError",
    "Outcome",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "Searcher",
    "TrainObjective",
    "adjusted_error",
    "build_space",
    "describe_objective",
    "get_searcher",
    "get_strategy",
    "greedy_plan",
    "load_space",
    "measure_latency_ms",
    "normalize_url",
    "objective_names",
    "open_storage",
    "register_objective",
    "run_search",
    "searcher_names",
    "size_penalty",
    "strategy_names",
    "work",
]
