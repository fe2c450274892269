"""Settings of the parallel-layout section (``parallel.*``) of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
        find_unused_parameters: DDP's search for parameters that ``forward`` did not use
            (needed when some never get a gradient). ``auto``: off, unless the first step
            leaves a parameter without a gradient on every rank; then the step is redone
            with the search on and a one-line hint is printed. ``true``: always search
            (costs a graph traversal per step); ``false``: never (such a model fails).
            Pipeline stages: ``auto`` searches in a stage whose blocks left a trainable
            parameter without a gradient in the cost measurement.
        shard: parameter sharding of the data-parallel replicas through FSDP2
            (``torch.distributed.fsdp.fully_shard``): ``none`` (DDP: every rank holds the
            whole model), ``full`` (parameters, gradients and optimizer state sharded over
            all data-parallel ranks) or ``hybrid`` (sharded inside groups of
            ``shard_size`` ranks, one node by default, replicated across the groups).
        shard_size: ``hybrid``: ranks per sharding group (``None``: the launcher's
            ``LOCAL_WORLD_SIZE``, the processes of one node); must divide the world size.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pipeline_stages: int = Field(1, ge=1, description="pipeline stages (1 = data parallel)")
    microbatches: int = Field(1, ge=1, description="microbatches per step (pipeline)")
    schedule: Literal["gpipe", "1f1b"] = Field("1f1b", description="pipeline schedule")
    stage_sizes: list[int] | None = Field(None, description="blocks per stage (None: balance)")
    max_imbalance: float = Field(1.5, ge=1.0, description="max stage cost / mean stage cost")
    find_unused_parameters: bool | Literal["auto"] = Field(
        "auto", description="DDP find_unused_parameters: auto (detect in step 1), true, false"
    )
    shard: Literal["none", "full", "hybrid"] = Field(
        "none", description="parameter sharding (FSDP2): none (DDP), full (over all data-parallel "
                            "ranks), hybrid (inside a node or shard_size ranks, replicated across)")
    shard_size: int | None = Field(
        None, ge=1, description="hybrid sharding: ranks per sharding group (None: LOCAL_WORLD_SIZE)")

    @field_validator("shard", mode="before")
    @classmethod
    def _none_word(cls, v: object) -> object:
        """``parallel.shard=none`` on the command line (YAML reads ``none`` as null)."""
        return "none" if v is None else v
