"""Settings of the parallel-layout section (``parallel.*``) of a run config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ParallelConfig(BaseModel):
    """Process layout: pipeline stages x data-parallel replicas.

    Attributes:
        pipeline_stages: number of pipeline stages S (1 = pure data parallelism).
        microbatches: microbatches per step for the pipeline schedule.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pipeline_stages: int = Field(1, ge=1, description="pipeline stages (1 = data parallel)")
    microbatches: int = Field(1, ge=1, description="microbatches per step (pipeline)")
