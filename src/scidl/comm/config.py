"""Settings of the gradient-communication section (``comm.*``) of a run config.

One flat model for every strategy: each strategy reads the fields it needs and ignores
the rest, so ``comm.strategy=topk comm.density=0.01`` is the whole change on the command
line. Fields that only matter to one strategy say so in their description.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Strategies ``auto`` cannot hold as candidates: itself, ``lag`` (applies results one
#: step late), ``grouped`` (asks DDP for buckets of its own), and ``dgc``/``topk_adam``
#: (they apply the optimizer's momentum/Adam themselves: the run needs plain SGD), and
#: torch's own hooks (they run inside DDP only, with no per-bucket reduce).
TORCH_HOOKS = frozenset({"torch_fp16", "torch_powersgd"})
NOT_AUTO_CANDIDATES = frozenset({"auto", "lag", "grouped", "dgc", "topk_adam"}) | TORCH_HOOKS


def split_candidate(spec: str) -> tuple[str, dict[str, Any]]:
    """A ``comm.auto_candidates`` entry as (strategy name, settings): ``quant`` or
    ``quant:quant_bits=4`` (``name:field=value:…``, the fields of ``comm``; values read
    as on the command line)."""
    from scidl.config import parse_value

    name, *pairs = spec.split(":")
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"comm.auto_candidates entry {spec!r}: settings are written "
                             "name:field=value (e.g. quant:quant_bits=4)")
        settings[key] = parse_value(value)
    return name, settings


def check_candidates(names: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError naming a ``comm.auto_candidates`` entry ``auto`` cannot use."""
    if not names:
        raise ValueError("comm.auto_candidates is empty")
    for spec in names:
        name, settings = split_candidate(spec)
        if name in NOT_AUTO_CANDIDATES:
            raise ValueError(f"comm.auto_candidates cannot hold {name!r} "
                             f"(excluded: {', '.join(sorted(NOT_AUTO_CANDIDATES))})")
        fixed = sorted(k for k in settings if k == "strategy" or k.startswith("auto_"))
        if fixed:
            raise ValueError(f"comm.auto_candidates entry {spec!r} cannot set "
                             f"{', '.join(fixed)}")
        unknown = sorted(k for k in settings if k not in CommConfig.model_fields)
        if unknown:
            raise ValueError(f"comm.auto_candidates entry {spec!r}: no comm field "
                             f"{', '.join(unknown)}")
        if list(names).count(spec) > 1:
            raise ValueError(f"comm.auto_candidates lists {spec!r} twice")


class CommConfig(BaseModel):
    """How gradients are reduced across data-parallel ranks.

    Attributes:
        strategy: registered strategy name (``scidl.comm.strategy_names()`` lists them).
        bucket_cap_mb: DDP gradient bucket size in MiB (also the first bucket's cap).
        timing: ``dense``: measure the time of each allreduce (``comm_s``,
            ``comm_exposed_s``) with a Python communication hook. Off, DDP reduces with
            its built-in allreduce and only bytes are counted (the other strategies
            always time their collectives).
        density: ``topk``: fraction k/n of each bucket's entries sent per rank.
        error_feedback: ``topk``/``powersgd``/``quant``: keep what was not sent and add it
            next step.
        value_dtype: ``topk``: wire type of the sent values (indices are always int32).
        selection: ``topk``: ``exact`` (``torch.topk``), ``threshold`` (sampled quantile,
            one pass over the bucket) or ``auto`` (exact up to ``exact_max_numel``).
        exact_max_numel: ``topk``/``auto``: largest bucket selected with exact top-k.
        sample_fraction: ``topk``/``threshold``: fraction of entries sampled to estimate
            the magnitude threshold.
        warmup_steps: ``topk``/``powersgd``/``quant``: optimizer steps reduced densely first
            (``torch_powersgd``: torch's ``start_powerSGD_iter``, at least 2).
        rank: ``powersgd``/``torch_powersgd``: rank r of the low-rank approximation P·Qᵀ.
        quant_bits: ``quant``: bits per gradient entry on the wire (8 or 4).
        quant_chunk: ``quant``: entries that share one fp32 scale (their largest
            magnitude maps to the largest integer).
        ranks_per_node: ``hierarchical``: processes per (possibly virtual) node;
            ``None`` = ``LOCAL_WORLD_SIZE`` of the launcher.
        group_mb: ``grouped``: target size of one fused group in MiB.
        group_gap_ms: ``grouped``: close a group early when the next gradient became ready
            more than this many milliseconds later in the observed backward pass.
        lag_inner: ``lag``: the strategy whose result is applied one step late.
        seed: seed of the strategies' random draws (PowerSGD's Q, threshold samples).
        density_warmup_steps: ``topk``/``dgc``/``topk_adam``: steps per stage of the
            exponential density warm-up after the dense ``warmup_steps`` (DGC, Lin et al.
            2018): 25 %, 6.25 %, 1.5625 %, … of the entries, each for this many steps,
            until ``density`` is reached; 0: ``density`` from the start.
        momentum: ``dgc``: the momentum the strategy applies itself (momentum
            correction); the optimizer must then be SGD without momentum.
        clip_norm: ``dgc``: local gradient clipping, each parameter's local gradient norm
            is clipped to ``clip_norm/√p`` before it is accumulated; None: off.
        adam_beta1: ``topk_adam``: decay of Adam's first moment.
        adam_beta2: ``topk_adam``: decay of Adam's second moment.
        adam_eps: ``topk_adam``: denominator epsilon √v̂ + eps.
        adam_freeze_steps: ``topk_adam``: dense Adam steps on the allreduced gradient
            before each rank's Adam update is sent as error-compensated top-k.
        sparse_collective: ``topk``/``dgc``/``topk_adam``: how the selected entries are
            summed: ``allgather`` (every rank's (index, value) pairs to every rank),
            ``rsag`` (sparse reduce-scatter to the owner of each index, then an
            allgather of the reduced chunks, each sparse or dense), ``oktopk`` (rsag
            whose owners keep only the ⌈k/p⌉ largest entries of their reduced chunk: a
            global re-sparsification to ≈ k entries, O(k) bytes whatever p; what is
            dropped returns to each sender's residual), or ``auto`` (per bucket, the
            cheapest of allgather, rsag, oktopk and dense for ``link_alpha``,
            ``link_beta``).
        link_alpha: ``sparse_collective=auto``: latency per message (s).
        link_beta: ``sparse_collective=auto``: seconds per byte (1/bandwidth).
        auto_candidates: ``auto``: strategies to choose from per bucket, least to most lossy;
            an entry is a name or ``name:field=value[:…]`` with settings of its own
            (``quant:quant_bits=4``; any field but ``strategy`` and ``auto_*``).
        auto_warmup_steps: ``auto``: steps observed before the refined choice (or, with
            ``auto_provisional`` off, reduced densely before the one choice).
        auto_fidelity_steps: ``auto``: steps over which the update each compressed
            candidate keeps is measured before the refined choice (0: not measured).
        auto_fidelity_max_entries: ``auto``: bound on the entries per bucket the update
            kept is measured on (a fixed sample of its tensors, scaled up; 0: all).
        auto_provisional: ``auto``: choose provisionally in step 0's first hook (link
            probe, the forward pass's time), so the observed steps already run compressed.
        auto_every: ``auto``: probe the link and choose again every N steps (0: once).
        auto_probe_bytes: ``auto``: the link probe's small allreduce size, and the bound
            on its large one (sized to take about 25 ms at the small one's rate).
        auto_exposed_fraction: ``auto``: target exposed communication / backward time.
        auto_min_gain: ``auto``: least step-time gain (fraction) worth one more compression.
        auto_link: ``auto``: (α s, β s/byte) to use instead of probing the link.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: str = Field("dense", description="gradient reduction strategy (registry name)")
    bucket_cap_mb: float = Field(25.0, gt=0, description="DDP bucket size in MiB")
    timing: bool = Field(
        False, description="dense: time every allreduce (comm_s, comm_exposed_s) through a "
                           "Python communication hook; off: DDP's built-in allreduce, bytes only")
    density: float = Field(
        0.01, gt=0, le=1, description="topk: fraction of each bucket's entries sent per rank"
    )
    error_feedback: bool = Field(
        True, description="topk/powersgd: carry the unsent remainder into the next step"
    )
    value_dtype: Literal["fp32", "fp16"] = Field(
        "fp32", description="topk: wire dtype of the sent values (indices are int32)"
    )
    selection: Literal["auto", "exact", "threshold"] = Field(
        "auto", description="topk: exact torch.topk, sampled-threshold, or auto by size"
    )
    exact_max_numel: int = Field(
        262_144, ge=1, description="topk auto: buckets up to this size use exact top-k"
    )
    sample_fraction: float = Field(
        0.01, gt=0, le=1, description="topk threshold: fraction of entries sampled"
    )
    warmup_steps: int = Field(
        0, ge=0, description="topk/powersgd/quant: dense steps before compressing"
    )
    rank: int = Field(4, ge=1, description="powersgd/torch_powersgd: rank of the low-rank "
                      "approximation")
    quant_bits: Literal[4, 8] = Field(8, description="quant: bits per entry on the wire")
    quant_chunk: int = Field(
        1024, ge=2, multiple_of=2, description="quant: entries sharing one fp32 scale")
    ranks_per_node: int | None = Field(
        None, ge=1, description="hierarchical: processes per (virtual) node"
    )
    group_mb: float = Field(4.0, gt=0, description="grouped: target fused-group size in MiB")
    group_gap_ms: float = Field(
        5.0, ge=0, description="grouped: split a group at backward gaps longer than this"
    )
    lag_inner: str = Field("dense", description="lag: strategy applied one step late")
    seed: int = Field(0, description="seed of the strategies' random draws")
    density_warmup_steps: int = Field(
        0, ge=0, description="topk/dgc/topk_adam: steps per stage of the exponential density "
        "warm-up 25%→6.25%→…→density (0: off)"
    )
    momentum: float = Field(
        0.9, ge=0, lt=1, description="dgc: momentum applied by the strategy (momentum "
        "correction); the optimizer must be SGD with optim.momentum=0"
    )
    clip_norm: float | None = Field(
        None, gt=0, description="dgc: clip each parameter's local gradient norm to "
        "clip_norm/sqrt(ranks) before accumulating (None: off)"
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="topk_adam: first-moment decay")
    adam_beta2: float = Field(
        0.999, ge=0, lt=1, description="topk_adam: second-moment decay"
    )
    adam_eps: float = Field(1e-8, gt=0, description="topk_adam: denominator epsilon")
    adam_freeze_steps: int = Field(
        100, ge=1, description="topk_adam: dense Adam steps before the per-rank "
        "Adam update is sent as error-compensated top-k (1-bit Adam's warm-up)"
    )
    sparse_collective: Literal["allgather", "rsag", "oktopk", "auto"] = Field(
        "allgather", description="topk/dgc/topk_adam: all-gather of the pairs, sparse "
        "reduce-scatter + allgather (rsag), rsag re-sparsified to ~k entries in all "
        "(oktopk), or auto per bucket from link_alpha/link_beta"
    )
    link_alpha: float = Field(
        5e-5, ge=0, description="sparse_collective=auto: latency per message in seconds"
    )
    link_beta: float = Field(
        8e-9, ge=0, description="sparse_collective=auto: seconds per byte (1/bandwidth; "
        "8e-9 = 1 Gbit/s)"
    )
    auto_candidates: list[str] = Field(
        ["dense", "fp16", "quant", "quant:quant_bits=4", "powersgd", "topk"],
        description="auto: strategies chosen from per bucket, least to most lossy "
        "(name or name:field=value, e.g. quant:quant_bits=4)")
    auto_warmup_steps: int = Field(
        3, ge=2, description="auto: steps observed before the refined choice (without "
        "auto_provisional: dense steps before the one choice)")
    auto_fidelity_steps: int = Field(
        10, ge=0, description="auto: steps over which rank 0 measures the share of the "
        "optimizer's update (SGD, Adam, AdamW) each compressed candidate keeps; the refined "
        "choice then waits for them and minimises step time / that share (0: time only)")
    auto_fidelity_max_entries: int = Field(
        1_000_000, ge=0, description="auto: measure the update kept on a fixed sample of each "
        "bucket's tensors holding at most this many entries, scaled to the bucket "
        "(0: every entry)")
    auto_provisional: bool = Field(
        True, description="auto: choose provisionally before step 0's first reduction, "
        "refine after auto_warmup_steps")
    auto_every: int = Field(
        0, ge=0, description="auto: re-probe the link and choose again every N steps (0: once)")
    auto_probe_bytes: tuple[int, int] = Field(
        (32_768, 1_048_576), description="auto: the link probe's small allreduce size and its "
        "large one's upper bound (a slow link gets a smaller one, ~25 ms)")
    auto_exposed_fraction: float = Field(
        0.05, ge=0, description="auto: target exposed communication as a fraction of backward")
    auto_min_gain: float = Field(
        0.05, ge=0, lt=1,
        description="auto: compress a bucket further only if the step gets this much faster")
    auto_link: tuple[float, float] | None = Field(
        None, description="auto: (alpha s, beta s/byte) used instead of probing the link")

    @field_validator("strategy", "lag_inner")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        from scidl.comm.registry import STRATEGIES

        if name not in STRATEGIES:
            raise ValueError(str(STRATEGIES.unknown(name)))
        return name

    @field_validator("auto_candidates")
    @classmethod
    def _known_candidates(cls, names: list[str]) -> list[str]:
        from scidl.comm.registry import STRATEGIES

        for spec in names:
            name = spec.split(":")[0]
            if name not in STRATEGIES:
                raise ValueError(str(STRATEGIES.unknown(name)))
        check_candidates(names)
        return names

    @field_validator("auto_probe_bytes")
    @classmethod
    def _probe_sizes(cls, sizes: tuple[int, int]) -> tuple[int, int]:
        if not 4 <= sizes[0] < sizes[1]:
            raise ValueError("comm.auto_probe_bytes must be two sizes, 4 <= small < large")
        return sizes

    @model_validator(mode="after")
    def _candidate_settings(self) -> CommConfig:
        """Each ``auto_candidates`` entry's own settings are valid ``comm`` values."""
        from pydantic import ValidationError

        for spec in self.auto_candidates:
            name, settings = split_candidate(spec)
            if not settings:
                continue
            try:
                type(self).model_validate({**self.model_dump(), **settings, "strategy": name,
                                           "auto_candidates": [name]})
            except ValidationError as err:
                first = err.errors()[0]
                raise ValueError(f"comm.auto_candidates entry {spec!r}: "
                                 f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
                                 ) from None
        return self

    @model_validator(mode="after")
    def _lag_not_nested(self) -> CommConfig:
        if self.lag_inner == "lag":
            raise ValueError("comm.lag_inner cannot be 'lag'")
        if self.lag_inner in TORCH_HOOKS:
            raise ValueError(f"comm.lag_inner cannot be {self.lag_inner!r} (torch's hooks "
                             "run inside DDP only)")
        return self
