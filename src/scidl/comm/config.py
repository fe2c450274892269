"""Settings of the gradient-communication section (``comm.*``) of a run config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CommConfig(BaseModel):
    """How gradients are reduced across data-parallel ranks.

    Attributes:
        strategy: registered strategy name (``scidl.comm.strategy_names()`` lists them).
        bucket_cap_mb: DDP gradient bucket size in MiB (first bucket is DDP's 1 MiB).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: str = Field("dense", description="gradient reduction strategy (registry name)")
    bucket_cap_mb: float = Field(25.0, gt=0, description="DDP bucket size in MiB")
