"""Settings of the optimizer section (``optim.*``) of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OptimConfig(BaseModel):
    """Optimizer and learning-rate schedule.

    Attributes:
        name: registered optimizer name (``scidl.optim.optimizer_names()``).
        lr: base learning rate (peak rate after warm-up).
        weight_decay: L2 penalty / decoupled decay, depending on the optimizer.
        momentum: SGD-style momentum.
        betas: Adam-style moment decay rates.
        eps: Adam-style denominator epsilon.
        schedule: learning-rate schedule after warm-up.
        warmup_steps: linear warm-up from ``warmup_start_factor * lr`` to ``lr``.
        warmup_start_factor: fraction of ``lr`` at step 0 of the warm-up.
        min_lr_factor: floor of decaying schedules, as a fraction of ``lr``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("adam", description="optimizer (registry name)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (SGD-style optimizers)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam-style betas")
    eps: float = Field(1e-8, gt=0, description="Adam-style epsilon")
    schedule: Literal["constant", "cosine"] = Field("constant", description="LR schedule")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    warmup_start_factor: float = Field(0.01, gt=0, le=1, description="LR factor at step 0")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="floor of decaying schedules")
