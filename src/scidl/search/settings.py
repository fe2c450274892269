"""The settings of one search (stored in the study, so workers that join read them)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SETTINGS_ATTR = "scidl_settings"


class SearchSettings(BaseModel):
    """Everything a worker needs to run trials of a study.

    The first process that creates the study writes these into the study's user
    attributes; ``scidl search --join`` reads them back, so a joining worker needs only
    the storage URL and the study name.
    """

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(description="registered workload (or a label for custom objectives)")
    strategy: str = Field(
        description="search method: a registered searcher (greedy, evolution, bayes, random, "
                    "or a plugin's)")
    trials: int = Field(20, ge=1, description="trial budget of the whole study (all workers)")
    space: dict[str, Any] = Field(default_factory=dict, description="search space (space.py schema)")
    base: dict[str, Any] = Field(default_factory=dict, description="run-config overrides for every trial")
    out: str = Field("runs/search", description="folder for trial runs, trials.csv, best.yaml, plots")
    seed: int = Field(0, description="base seed of the samplers (worker i uses seed + i)")
    metric: str = Field("", description="metric optimised ('' = the workload's headline)")
    direction: Literal["maximize", "minimize"] = Field("minimize", description="of the metric")
    n_train: int | None = Field(None, description="training samples (for the adjusted score)")
    objective: str = Field("train", description="registered objective name (objective_names())")
    objective_args: dict[str, Any] = Field(default_factory=dict, description="its keyword args")
    heartbeat_s: float = Field(10.0, gt=0, description="seconds between trial heartbeats")
    grace_s: float | None = Field(None, gt=0, description="stale after (default 3 x heartbeat)")
    max_retries: int = Field(1, ge=0, description="re-queues of a trial whose worker died")
    sampler: Literal["tpe", "gp"] = Field("tpe", description="bayes: TPE or Gaussian process")
    pruner: Literal["median", "sha", "none"] = Field("median", description="bayes: pruner")
    population: int = Field(8, ge=2, description="evolution: NSGA-II population size")
    per_depth: int = Field(4, ge=1, description="greedy: trials per depth (strata of width)")
    tol: float = Field(0.01, ge=0, description="greedy: relative improvement to go deeper")
    penalty: float = Field(0.1, ge=0, description="greedy: weight λ of the size penalty")
    latency_batch: int = Field(64, ge=1, description="samples per batch when timing inference")

    @field_validator("strategy")
    @classmethod
    def _known_searcher(cls, name: str) -> str:
        from scidl.search.base import SEARCHERS

        if name not in SEARCHERS:
            raise ValueError(str(SEARCHERS.unknown(name)))
        return name

    @property
    def grace(self) -> float:
        return self.grace_s if self.grace_s is not None else 3.0 * self.heartbeat_s

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        return cls.model_validate(json.loads(text))
