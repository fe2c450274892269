"""``emulator``: a neural emulator of (synthetic) gas optics, after Veerman et al. (2021).

Inputs per atmospheric layer are ``(log p, T, log q1, log q2)``; outputs are the effective
optical depths of ``n_bands`` spectral bands computed by an expensive line-by-line sum
(:mod:`scidl.workloads.emulator.lbl`). As in the paper, the network predicts the
*log-transformed*, standardised outputs and there are separate networks for the lower and
the upper atmosphere (split at ``split_pressure_hpa``). The classical fast reference is a
4-D lookup table with multilinear interpolation. The loss is

    L = mean_{layers, bands} ( f_theta(x) - (log tau_b - mu_b) / sigma_b )^2

and the reported error is the relative error ``|tau_hat - tau| / tau`` over all layers and
bands of a held-out set (median and 99th percentile), next to the same numbers for the
table, and the time per column (``layers_per_column`` layers) of network and table.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Width, Workload, WorkloadConfig
from scidl.workloads.emulator.lbl import (
    LookupTable,
    lbl_optical_depth,
    make_spectroscopy,
    sample_columns,
)
from scidl.workloads.emulator.nets import RegimeEmulator


class EmulatorConfig(WorkloadConfig):
    """Settings of the ``emulator`` workload."""

    n_lines: int = Field(128, ge=1, description="spectral lines per gas (two gases)")
    n_wavenumbers: int = Field(1024, ge=16, description="fine wavenumber grid points")
    n_bands: int = Field(16, ge=1, description="bands (outputs); must divide n_wavenumbers")
    n_train: int = Field(160, ge=1, description="training columns (line-by-line evaluations)")
    n_val: int = Field(40, ge=1, description="held-out columns")
    layers_per_column: int = Field(60, ge=2, description="layers per column")
    hidden: list[Width] = Field([64, 64], description="hidden widths of each network")
    activation: Literal["silu", "tanh", "relu", "leaky_relu"] = Field(
        "silu", description="hidden activation"
    )
    split_pressure_hpa: float | None = Field(
        100.0, gt=0, description="one network below and one above this pressure; None: one"
    )
    lut_shape: tuple[int, int, int, int] = Field(
        (10, 8, 8, 6), description="lookup-table points along (log p, T, log q1, log q2)"
    )
    time_columns: int = Field(128, ge=0, description="columns timed in evaluate (0: no timing)")
    time_repeats: int = Field(5, ge=1, description="interleaved timing repeats (median)")


def relative_errors(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Median and 99th percentile of ``|pred - ref| / ref`` over all entries."""
    rel = ((pred - ref).abs() / ref).flatten().double()
    return {"median": float(rel.median()), "p99": float(torch.quantile(rel, 0.99))}


def time_per_column(
    fns: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
    n_columns: int, repeats: int,
) -> dict[str, float]:
    """Seconds per column of each function on ``x`` (``n_columns`` columns), median of
    ``repeats`` interleaved repeats (so background load hits every function alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up
            fn(x)
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] / n_columns for k, v in times.items()}


def _dataset_key(cfg: EmulatorConfig, seed: int) -> str:
    fields = ("n_lines", "n_wavenumbers", "n_bands", "n_train", "n_val", "layers_per_column",
              "lut_shape")
    blob = json.dumps({k: getattr(cfg, k) for k in fields} | {"seed": seed, "v": 1})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_emulator_data(cfg: EmulatorConfig, seed: int, cache: Path | None = None) -> dict:
    """Line-by-line training/validation sets and the lookup table (cached if ``cache``).

    Returns ``x_train, tau_train, x_val, tau_val, lut_tau_val, lut_table`` tensors plus
    ``lbl_s_per_layer`` (seconds per line-by-line layer, measured on the validation set).
    """
    path = None if cache is None else cache / f"emulator_{_dataset_key(cfg, seed)}.pt"
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True)  # tensors only: never unpickle code
    spec = make_spectroscopy(seed, cfg.n_lines, cfg.n_wavenumbers, cfg.n_bands)
    x_train = sample_columns(cfg.n_train, cfg.layers_per_column, seed=2 * seed + 1)
    x_val = sample_columns(cfg.n_val, cfg.layers_per_column, seed=2 * seed + 2)
    tau_train = lbl_optical_depth(x_train, spec)
    t0 = time.perf_counter()
    tau_val = lbl_optical_depth(x_val, spec)
    lbl_s = (time.perf_counter() - t0) / x_val.shape[0]
    lut = LookupTable(spec, cfg.lut_shape)
    data = {
        "x_train": x_train, "tau_train": tau_train, "x_val": x_val, "tau_val": tau_val,
        "lut_tau_val": lut(x_val), "lut_table": lut.table, "lbl_s_per_layer": lbl_s,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
    return data


def lut_from_table(table: torch.Tensor, shape: tuple[int, int, int, int]) -> LookupTable:
    """A :class:`LookupTable` around an already computed table (no line-by-line calls)."""
    lut = LookupTable.__new__(LookupTable)
    LookupTable._init_index(lut, shape)
    lut.table = table
    return lut


class Emulator(Workload):
    """Neural gas-optics emulator vs a lookup table (Veerman et al. 2021, synthetic)."""

    name = "emulator"
    description = "gas-optics emulator: MLPs per pressure regime vs line-by-line and a LUT"
    Config = EmulatorConfig
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"epochs": 100, "batch_size": 256, "eval_every": 1000},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "min_lr_factor": 0.01},
    }
    smoke: ClassVar[list[str]] = [
        "task.n_lines=16", "task.n_wavenumbers=128", "task.n_bands=4", "task.n_train=4",
        "task.n_val=2", "task.layers_per_column=10", "task.lut_shape=[3,3,3,3]",
        "task.hidden=[8]", "task.time_columns=0", "train.batch_size=8",
    ]

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, EmulatorConfig)
        data = make_emulator_data(cfg, ctx.seed, ctx.data_dir)
        log_train = torch.log(data["tau_train"])
        mean, std = log_train.mean(0), log_train.std(0)
        model = RegimeEmulator(
            cfg.n_bands, cfg.hidden, cfg.activation, cfg.split_pressure_hpa, mean, std
        )
        train = TensorDataset(data["x_train"], (log_train - mean) / std)
        lut = lut_from_table(data["lut_table"], cfg.lut_shape)
        lut_err = relative_errors(data["lut_tau_val"], data["tau_val"])

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return torch.mean((m(x) - y) ** 2)

        def evaluate(m: nn.Module, val: Any) -> dict[str, float]:
            x, tau = val["x"], val["tau"]
            assert isinstance(m, RegimeEmulator)
            with torch.no_grad():
                pred = torch.cat([m.predict_tau(xb) for xb in torch.split(x, 4096)])
            err = relative_errors(pred, tau)
            out = {
                "median_rel_err": err["median"], "p99_rel_err": err["p99"],
                "lut_median_rel_err": lut_err["median"], "lut_p99_rel_err": lut_err["p99"],
                "lbl_ms_per_column": 1e3 * data["lbl_s_per_layer"] * cfg.layers_per_column,
            }
            n_cols = min(cfg.time_columns, x.shape[0] // cfg.layers_per_column)
            if n_cols > 0:
                xc = x[: n_cols * cfg.layers_per_column]
                t = time_per_column({"net": m.predict_tau, "lut": lut}, xc, n_cols,
                                    cfg.time_repeats)
                out |= {"net_us_per_column": 1e6 * t["net"], "lut_us_per_column": 1e6 * t["lut"],
                        "speedup_vs_lut": t["lut"] / t["net"]}
            return out

        return Task(
            model=model, train_data=train, loss=loss, evaluate=evaluate,
            val_data={"x": data["x_val"], "tau": data["tau_val"]},
            headline="median_rel_err", higher_is_better=False,
            extras={"lut": lut, "lut_errors": lut_err, "lbl_s_per_layer": data["lbl_s_per_layer"]},
        )
