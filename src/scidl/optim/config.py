"""Settings of the optimizer section (``optim.*``) of a run config.

Flat fields grouped by prefix: the base optimizer (``lr``, ``momentum``, ...), the layer-wise
trust ratio of LARS/LARC/LAMB (``trust_coefficient``, ``clip``, ``exclude_1d``), the schedule
(``schedule``, ``warmup_*``, ``poly_power``, ``cycles``, ``reference_batch``) and Anderson
acceleration (``aa_*``, used when ``name=anderson``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class OptimConfig(BaseModel):
    """Optimizer and learning-rate schedule.

    Attributes:
        name: registered optimizer name (``scidl.optim.optimizer_names()``).
        lr: base learning rate (peak rate after warm-up, before the linear scaling rule).
        weight_decay: L2 penalty / decoupled decay, depending on the optimizer.
        momentum: SGD-style momentum (SGD, LARS, LARC).
        betas: Adam-style moment decay rates (Adam, AdamW, LAMB).
        eps: Adam-style denominator epsilon; also the LARS/LARC denominator guard. None
            (default): each optimizer's own default, 1e-8 for Adam/AdamW/LARS/LARC and 1e-6
            for LAMB (as in the LAMB paper and timm); see ``eps_or``.
        trust_coefficient: LARS/LARC trust coefficient eta in eta*||w||/(||g||+wd*||w||).
        clip: LARC clipping: the layer rate is min(trust ratio, lr) instead of lr*ratio.
        exclude_1d: 1-D parameters (biases, norm scales) get no weight decay and no trust
            ratio (LARS/LARC/LAMB).
        schedule: learning-rate schedule after warm-up.
        warmup_steps: linear warm-up from ``warmup_start_factor * lr`` to ``lr``.
        warmup_start_factor: fraction of ``lr`` at step 0 of the warm-up.
        min_lr_factor: floor of decaying schedules, as a fraction of ``lr``.
        poly_power: exponent p of the polynomial decay (1 - t/T)^p.
        cycles: number of cosine cycles of the ``cyclic`` schedule (snapshot ensembles).
        reference_batch: linear scaling rule: the rate is multiplied by
            global_batch / reference_batch (None: no scaling).
        aa_base: base optimizer wrapped by ``anderson``.
        aa_history: Anderson history depth m (stored iterates, >= 3 to extrapolate).
        aa_every: extrapolate every k optimizer steps.
        aa_store_every: store an iterate every s optimizer steps.
        aa_wait: plain base-optimizer steps before the first extrapolation.
        aa_reg: Tikhonov regularisation, relative to the mean squared column norm.
        aa_relaxation: relaxation (mixing) parameter beta in (0, 1].
        aa_safeguard: keep the extrapolated point only if the loss decreased (on by
            default: unguarded AA diverged on noisy mini-batches in our benchmarks). Needs a
            closure; the trainer then calls ``step(closure)``; without one it is skipped.
        aa_safeguard_eval: how the safeguard measures the two losses: ``forward`` (two
            forward passes without gradients on the step's batch and one scalar all-reduce;
            uses ``closure.evaluate`` when the closure has one, as the trainer's does) or
            ``full`` (the closure itself twice: forward + backward and, under DDP, a
            gradient all-reduce each; the earlier behaviour, kept for comparisons).
        aa_safeguard_sync: when the ranks agree on the safeguard's decision: ``blocking``
            (the losses are all-reduced and the decision taken in the attempt's step) or
            ``deferred`` (the all-reduce runs during the next step, which starts from the
            base iterate; accepted, the displacement x_AA - x_base is added one step late).
        aa_ma: moving average of iterates: off, on, or auto (on while the relative
            deviation exceeds ``aa_ma_tol``).
        aa_ma_window: iterates in the moving-average window.
        aa_ma_tol: tolerance on the relative deviation for ``aa_ma=auto``.
        aa_history_dtype: storage dtype of the history on the parameters' device.
        aa_state_policy: what happens to the base optimizer's state after an
            extrapolation: keep it, reset first moments (momentum / Adam exp_avg), or
            reset all state.
        lbfgs_max_iter: L-BFGS iterations per optimizer step (``name=lbfgs``).
        lbfgs_history: L-BFGS history size (stored curvature pairs).
        lbfgs_line_search: ``strong_wolfe`` (step length found by a line search on the
            rank-averaged loss) or ``none`` (fixed step ``lr``).
        lbfgs_tolerance_grad: an L-BFGS step stops when the largest gradient entry is below this.
        lbfgs_tolerance_change: an L-BFGS step stops when the loss or the parameters change
            by less than this between iterations.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("adam", description="optimizer (registry name)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (SGD-style optimizers)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam-style betas")
    eps: float | None = Field(
        None, gt=0,
        description="Adam-style epsilon / LARS denominator guard (None: the optimizer's "
        "default, 1e-6 for lamb, 1e-8 otherwise)",
    )
    trust_coefficient: float = Field(1e-3, gt=0, description="LARS/LARC trust coefficient")
    clip: bool = Field(False, description="LARC: clip the layer rate at lr")
    exclude_1d: bool = Field(True, description="no decay / trust ratio for 1-D params")
    schedule: Literal["constant", "cosine", "poly", "cyclic"] = Field(
        "constant", description="LR schedule after warm-up"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    warmup_start_factor: float = Field(0.01, gt=0, le=1, description="LR factor at step 0")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="floor of decaying schedules")
    poly_power: float = Field(2.0, gt=0, description="polynomial decay exponent")
    cycles: int = Field(1, ge=1, description="cosine cycles of the cyclic schedule")
    reference_batch: int | None = Field(
        None, ge=1, description="linear scaling rule: lr *= global_batch / reference_batch"
    )
    aa_base: str = Field("sgd", description="base optimizer wrapped by anderson")
    aa_history: int = Field(5, ge=1, description="Anderson history depth m")
    aa_every: int = Field(4, ge=1, description="extrapolate every k steps")
    aa_store_every: int = Field(1, ge=1, description="store an iterate every s steps")
    aa_wait: int = Field(0, ge=0, description="base steps before the first extrapolation")
    aa_reg: float = Field(1e-8, ge=0, description="relative Tikhonov regularisation")
    aa_relaxation: float = Field(1.0, gt=0, le=1, description="relaxation beta")
    aa_safeguard: bool = Field(True, description="keep x_AA only if the loss decreased")
    aa_safeguard_eval: Literal["forward", "full"] = Field(
        "forward", description="safeguard losses: forward-only passes, or full closure calls")
    aa_safeguard_sync: Literal["blocking", "deferred"] = Field(
        "blocking", description="safeguard decision: in the attempt's step, or one step late")
    aa_ma: Literal["off", "on", "auto"] = Field("off", description="moving average of iterates")
    aa_ma_window: int = Field(5, ge=2, description="moving-average window (iterates)")
    aa_ma_tol: float = Field(0.2, gt=0, le=1, description="relative-deviation tolerance (auto)")
    aa_history_dtype: Literal["float32", "float64", "bfloat16", "float16"] = Field(
        "float32", description="history storage dtype"
    )
    aa_state_policy: Literal["keep", "reset_momentum", "reset"] = Field(
        "keep", description="base optimizer state after an extrapolation"
    )

    lbfgs_max_iter: int = Field(20, ge=1, description="L-BFGS iterations per optimizer step")
    lbfgs_history: int = Field(50, ge=1, description="L-BFGS history size")
    lbfgs_line_search: Literal["strong_wolfe", "none"] = Field(
        "strong_wolfe", description="L-BFGS line search (none: fixed step lr)")
    lbfgs_tolerance_grad: float = Field(
        1e-7, ge=0, description="L-BFGS: stop a step when max |gradient| is below this")
    lbfgs_tolerance_change: float = Field(
        1e-9, ge=0, description="L-BFGS: stop a step when loss/parameter changes are below this")

    def eps_or(self, default: float) -> float:
        """``eps`` if set, else the optimizer's own ``default``."""
        return default if self.eps is None else self.eps

    @field_validator("aa_ma", mode="before")
    @classmethod
    def _ma_from_yaml_bool(cls, v: object) -> object:
        """YAML reads ``on``/``off`` as booleans: map them back."""
        if isinstance(v, bool):
            return "on" if v else "off"
        return v


#: Settings a phase of an optimizer gets unless the phase sets them itself: L-BFGS takes
#: unit steps found by its line search, so the section's schedule (made for Adam/SGD) and
#: learning rate do not carry over.
PHASE_DEFAULTS: dict[str, dict[str, object]] = {
    "lbfgs": {"lr": 1.0, "schedule": "constant", "warmup_steps": 0, "reference_batch": None},
}


class PhaseConfig(BaseModel):
    """One training phase (an item of ``train.phases``): an optimizer for a number of steps.

    Any other key is an ``optim.*`` setting for this phase only (``lr``, ``schedule``,
    ``lbfgs_max_iter``, ...); unset ones come from :data:`PHASE_DEFAULTS` for the phase's
    optimizer, then from the ``optim`` section.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    optim: str = Field(description="optimizer of this phase (an optim.name)")
    steps: int = Field(ge=1, description="optimizer steps of this phase (L-BFGS: each up to "
                                         "optim.lbfgs_max_iter iterations)")

    @model_validator(mode="after")
    def _known_settings(self) -> PhaseConfig:
        extra = dict(self.model_extra or {})
        unknown = sorted(k for k in extra if k not in OptimConfig.model_fields or k == "name")
        if unknown:
            raise ValueError(f"unknown phase setting {unknown[0]!r}: a phase takes optim, steps "
                             "and optim.* settings (lr, schedule, lbfgs_max_iter, ...)")
        self.optim_config(OptimConfig())  # the settings themselves must be valid
        return self

    def settings(self) -> dict[str, object]:
        """This phase's own ``optim.*`` settings (without ``optim`` and ``steps``)."""
        return dict(self.model_extra or {})

    def optim_config(self, base: OptimConfig) -> OptimConfig:
        """The ``optim`` section this phase trains with: ``base`` updated by the phase's
        optimizer defaults and its own settings."""
        data = {**base.model_dump(), **PHASE_DEFAULTS.get(self.optim, {}), **self.settings(),
                "name": self.optim}
        return OptimConfig.model_validate(data)


def parse_phases(value: object) -> object:
    """``"adam:1000,lbfgs:50"`` (the command-line form) as a list of phase mappings;
    other values unchanged (a YAML list of mappings, None)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("", "none", "null", "[]"):
        return []
    out = []
    for item in text.split(","):
        name, sep, steps = item.strip().partition(":")
        if not sep or not name.strip() or not steps.strip().isdigit():
            raise ValueError(f"phase {item.strip()!r} is not OPTIM:STEPS (e.g. adam:1000,lbfgs:50)")
        out.append({"optim": name.strip(), "steps": int(steps)})
    return out
