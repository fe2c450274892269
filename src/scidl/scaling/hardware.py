"""Hardware profiles: per-level α/β/γ, devices per node, sustained device throughput.

Presets live as YAML files in ``scidl/hardware/`` (figures from public specifications,
cited in each file); ``scidl bench-collectives`` writes one for the machine it runs on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scidl.runtime.files import atomic_write_text
from scidl.scaling.costmodel import LinkCost, Topology


class Level(BaseModel):
    """Cost of one level of the machine (seconds and bytes)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(..., ge=0, description="latency per message (s)")
    beta: float = Field(..., ge=0, description="s/byte: 1/bandwidth (inter: the node's NIC)")
    gamma: float = Field(default=0.0, ge=0, description="s/byte to reduce (sum) received data")
    burst_bytes: float = Field(
        default=0.0, ge=0,
        description="bytes the link passes at once after an idle spell: the depth of a "
        "token-bucket shaper (a virtual cluster's links, cloud instances' burst "
        "allowance); 0: a plain link",
    )
    op_beta: dict[str, float] = Field(
        default_factory=dict,
        description="per collective (allreduce, allgather, reduce_scatter): its own measured "
        "s/byte of the ring model's beta term, reduction included; used instead of beta "
        "and gamma for that op (a backend that runs one op slower per byte than another)",
    )
    op_beta_ranks: int | None = Field(
        default=None, ge=2,
        description="the rank count op_beta was timed at; with cores_beta, the rates at "
        "other counts add the cores' extra cost (scidl.scaling.contention."
        "cores_bound_rates); None: unknown, op_beta as timed at every count",
    )
    cores_beta: dict[str, dict[int, float]] = Field(
        default_factory=dict,
        description="per collective and rank count: s/byte of the ring model's beta term "
        "that the ranks' cores alone sustain (the op timed on loopback, no link in the "
        "way); where ranks share cores it falls with p and can hold up the link",
    )
    op_latency: dict[str, dict[int, list[tuple[float, float]]]] = Field(
        default_factory=dict,
        description="per collective and rank count: [bytes, mean seconds] of small messages "
        "as measured (scidl bench-collectives); a collective of that op is never priced "
        "below them (scidl.scaling.costmodel.latency_floor)",
    )
    note: str = Field(default="", description="where the figures come from")

    def at_ranks(self, ranks: int) -> Level:
        """This level as ``ranks`` ranks see it: the per-op rates with the cores' extra
        cost per byte at that count over the calibration's
        (:func:`scidl.scaling.contention.cores_bound_rates`); itself where the rank
        count of the rates or the cores' own rates are unknown."""
        if not (self.op_beta_ranks and self.cores_beta and self.op_beta):
            return self
        from scidl.scaling.contention import cores_bound_rates

        rates = cores_bound_rates(self.op_beta, self.cores_beta, ranks, self.op_beta_ranks)
        return self.model_copy(update={"op_beta": rates})

    def cost(self) -> LinkCost:
        return LinkCost(self.alpha, self.beta, self.gamma, dict(self.op_beta),
                        {op: {int(p): [tuple(r) for r in rows] for p, rows in t.items()}
                         for op, t in self.op_latency.items()})


class Hardware(BaseModel):
    """A machine as the cost model sees it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="preset name")
    description: str = Field(default="", description="one line")
    device: str = Field(default="", description="device model")
    devices_per_node: int = Field(default=1, ge=1, description="ranks per node (g)")
    peak_flops: float | None = Field(
        default=None, gt=0, description="device peak FLOP/s (precision used)"
    )
    sustained_flops: float | None = Field(
        default=None,
        gt=0,
        description="device FLOP/s sustained in training (assumption or measured)",
    )
    concurrent_devices: int | None = Field(
        default=None,
        ge=1,
        description="ranks that can compute at once (CPU cores); more time-share",
    )
    overlap: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="fraction of the bucket-overlap model achieved (0: none)",
    )
    algorithm: str = Field(default="ring", description="default allreduce algorithm of the stack")
    fusion_bytes: float = Field(
        default=25 * 2**20,
        gt=0,
        description="gradient bucket / fusion buffer of the software stack",
    )
    intra: Level
    inter: Level | None = Field(default=None, description="network level (None: single node)")
    intra_by_ranks: dict[int, Level] = Field(
        default_factory=dict,
        description="intra level fitted at one process count (oversubscribed CPU nodes, "
        "where latency grows with the ranks sharing the cores); used for that p",
    )
    compute_slowdown: dict[int, float] = Field(
        default_factory=dict,
        description="measured slowest-rank compute slowdown with p ranks busy (p -> factor); "
        "replaces the concurrent_devices rule at that p",
    )
    compute_slowdown_range: dict[int, list[float]] = Field(
        default_factory=dict,
        description="spread of the measured compute_slowdown[p]: [lo, hi], the quartiles of "
        "the probe's paired per-block ratios (p -> [lo, hi]); widens the predicted step's "
        "band (empty: no spread measured)")
    probe_step_s: float | None = Field(
        default=None, gt=0,
        description="one rank's compute-probe step alone (w, s). With compute_slowdown and "
        "concurrent_devices (the cores C) it calibrates the contention model "
        "(scidl.scaling.contention): compute at p slows by max(1, p/C) plus the probe's "
        "delay per collective spread over the step's compute; None: compute_slowdown[p] as "
        "measured")
    straggler_cv: float = Field(
        default=0.0, ge=0,
        description="per-rank step-time spread relative to the step (σ/median) on this machine, "
        "used when the profile has no step_cv (a system's noise; fitted for the published "
        "systems)")
    interference: float = Field(
        default=1.0, ge=1,
        description="backward slowdown while collectives run concurrently (Echo 2024), used "
        "when the profile has none")
    fs_bandwidth: float | None = Field(
        default=None, gt=0,
        description="aggregate bytes/s of the shared file system the ranks read input from "
        "(None: input reads do not contend)")
    measured_here: bool = Field(default=False, description="calibrated on the machine that runs it")
    sources: list[str] = Field(default_factory=list)
    assumptions: list[str] = Field(default_factory=list)

    def topology(self, ranks: int | None = None) -> Topology:
        """Cost-model view; ``ranks`` selects a per-process-count fit when there is one
        and prices the per-op rates as that many ranks see them (:meth:`Level.at_ranks`)."""
        intra = self.intra_by_ranks.get(ranks, self.intra) if ranks else self.intra
        inter = self.inter or intra
        if ranks:
            intra, inter = intra.at_ranks(ranks), inter.at_ranks(ranks)
        return Topology(self.devices_per_node, intra.cost(), inter.cost())


def preset_names() -> list[str]:
    """Names of the bundled hardware presets."""
    pkg = resources.files("scidl") / "hardware"
    return sorted(p.name[:-5] for p in pkg.iterdir() if p.name.endswith(".yaml"))


def load_hardware(name_or_path: str | Path) -> Hardware:
    """Load a preset by name or a hardware YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"hardware file not found: {p}")
        text = p.read_text()
    else:
        res = resources.files("scidl") / "hardware" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise KeyError(
                f"unknown hardware {str(name_or_path)!r}; presets: {', '.join(preset_names())}"
                " (or a YAML file written by `scidl bench-collectives`)"
            )
        text = res.read_text()
    try:
        return Hardware.model_validate(yaml.safe_load(text))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise KeyError(f"hardware {name_or_path}: invalid '{loc}': {err['msg']}") from None


def save_hardware(hw: Hardware, path: str | Path) -> Path:
    """Write a hardware profile as YAML."""
    p = Path(path)
    atomic_write_text(p, yaml.safe_dump(hw.model_dump(), sort_keys=False))  # int keys stay ints
    return p
