"""Settings of the parallel-layout section (``parallel.*``) of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ParallelConfig(BaseModel):
    """Process layout: pipeline stages x data-parallel replicas (world = stages x replicas).

    Attributes:
        pipeline_stages: number of pipeline stages S (1 = pure data parallelism).
        microbatches: microbatches M per step; the per-replica batch must divide by M.
        schedule: pipeline schedule, ``gpipe`` (all forwards, then all backwards) or
            ``1f1b`` (one forward one backward: same bubble, fewer live activations).
        stage_sizes: blocks per stage, e.g. ``[5, 3]``; ``None`` balances by measured cost.
        max_imbalance: an explicit ``stage_sizes`` whose slowest stage costs more than this
            factor times the mean stage cost is rejected (the message gives a balanced split).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pipeline_stages: int = Field(1, ge=1, description="pipeline stages (1 = data parallel)")
    microbatches: int = Field(1, ge=1, description="microbatches per step (pipeline)")
    schedule: Literal["gpipe", "1f1b"] = Field("1f1b", description="pipeline schedule")
    stage_sizes: list[int] | None = Field(None, description="blocks per stage (None: balance)")
    max_imbalance: float = Field(1.5, ge=1.0, description="max stage cost / mean stage cost")
