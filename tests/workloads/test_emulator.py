"""emulator: line-by-line physics, lookup table, regime networks, tiny training run."""

from __future__ import annotations

import math

import pytest
import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.emulator.lbl import (
    INPUT_HIGH,
    INPUT_LOW,
    LookupTable,
    lbl_optical_depth,
    make_spectroscopy,
    pseudo_voigt,
    sample_columns,
)
from scidl.workloads.emulator.nets import RegimeEmulator
from scidl.workloads.emulator.workload import EmulatorConfig, relative_errors

TINY = dict(n_lines=16, n_wavenumbers=128, n_bands=4, n_train=8, n_val=4,
            layers_per_column=10, lut_shape=(3, 3, 3, 3), hidden=[16], time_columns=0)


@pytest.mark.parametrize("gl,gd", [(2.0, 1e-3), (1e-3, 2.0), (1.0, 1.0)])
def test_pseudo_voigt_has_unit_area(gl, gd):
    x = torch.linspace(-4000, 4000, 800_001, dtype=torch.float64)
    area = torch.trapezoid(pseudo_voigt(x, torch.tensor(gl), torch.tensor(gd)), x)
    assert abs(float(area) - 1.0) < 2e-3  # Lorentz wings beyond |x|=4000 miss ~1e-3 gl


def _direct_band_tau(x: torch.Tensor, spec) -> torch.Tensor:
    """Straightforward per-line evaluation of the module docstring's formulas (one layer)."""
    p, t, q1, q2 = math.exp(x[0]), float(x[1]), math.exp(x[2]), math.exp(x[3])
    grid = torch.arange(spec.n_nu, dtype=torch.float64)
    ks = []
    for g, lines in enumerate(spec.gases):
        k = torch.zeros(spec.n_nu, dtype=torch.float64)
        broad = 1 + (spec.self_broadening - 1) * q1 if g == 0 else 1.0
        for i in range(lines.centre.numel()):
            c = float(lines.centre[i])
            s = lines.strength[i] * (296 / t) * math.exp(-1.4388 * lines.energy[i] * (1 / t - 1 / 296))
            gl = lines.width[i] * (p / 1013.25) * (296 / t) ** lines.t_exp[i] * broad
            gd = spec.doppler * math.sqrt(t / 296)
            near = (grid - math.floor(c)).abs() <= spec.cutoff
            k[near] += s * pseudo_voigt(grid[near] - c, torch.as_tensor(gl), torch.tensor(gd))
        ks.append(k)
    cont = spec.continuum * q1 * p * (296 / t) ** 4
    tau = spec.amount * p * (q1 * ks[0] + q2 * ks[1] + q1 * cont)
    trans = torch.exp(-tau).reshape(spec.n_bands, -1).mean(1)
    return -torch.log(trans)


def test_lbl_matches_direct_line_sum():
    spec = make_spectroscopy(3, n_lines=12, n_nu=96, n_bands=3)
    x = sample_columns(1, 2, seed=5)
    fast = lbl_optical_depth(x, spec)
    for row, ref in zip(x, fast, strict=True):
        direct = _direct_band_tau(row.double(), spec)
        torch.testing.assert_close(ref.double(), direct, rtol=2e-4, atol=1e-9)


def test_lbl_is_deterministic_and_saturates():
    spec_a, spec_b = make_spectroscopy(1, 16, 128, 4), make_spectroscopy(1, 16, 128, 4)
    x = sample_columns(2, 6, seed=0)
    torch.testing.assert_close(lbl_optical_depth(x, spec_a), lbl_optical_depth(x, spec_b))
    # doubling the absorbers at most doubles the effective optical depth (saturation)
    x2 = x.clone()
    x2[:, 2:] += math.log(2.0)
    ratio = lbl_optical_depth(x2, spec_a) / lbl_optical_depth(x, spec_a)
    assert (ratio <= 2.0 + 1e-3).all() and (ratio > 1.0).all()


def test_lookup_table_is_exact_on_nodes_and_close_inside():
    spec = make_spectroscopy(0, n_lines=16, n_nu=128, n_bands=4)
    lut = LookupTable(spec, (5, 4, 4, 3))
    axes = [torch.linspace(lo, hi, n) for lo, hi, n in zip(INPUT_LOW, INPUT_HIGH, lut.shape, strict=True)]
    nodes = torch.stack([axes[0][[1, 3]], axes[1][[0, 2]], axes[2][[3, 1]], axes[3][[2, 0]]], 1)
    torch.testing.assert_close(lut(nodes), lbl_optical_depth(nodes, spec), rtol=1e-4, atol=0)
    x = sample_columns(4, 20, seed=1)
    fine = LookupTable(spec, (12, 8, 8, 6))
    coarse_err = relative_errors(lut(x), lbl_optical_depth(x, spec))["median"]
    fine_err = relative_errors(fine(x), lbl_optical_depth(x, spec))["median"]
    assert fine_err < coarse_err and fine_err < 0.05


def test_regime_networks_route_by_pressure():
    torch.manual_seed(0)
    model = RegimeEmulator(3, [8], "silu", 100.0, torch.zeros(3), torch.ones(3))
    x = sample_columns(2, 12, seed=2)
    out = model(x)
    lower = x[:, 0] >= math.log(100.0)
    assert lower.any() and (~lower).any()
    z = model.norm(x)
    torch.testing.assert_close(out[lower], model.nets[0](z[lower]))
    torch.testing.assert_close(out[~lower], model.nets[1](z[~lower]))


def test_emulator_tiny_config_trains():
    wl = get_workload("emulator")
    cfg = EmulatorConfig(**TINY)
    torch.manual_seed(0)
    task = wl.build(cfg, BuildContext(seed=0))
    x, y = task.train_data.tensors
    assert x.shape == (80, 4) and y.shape == (80, 4)
    opt = torch.optim.Adam(task.model.parameters(), 1e-2)
    first = float(task.loss(task.model, (x, y)).detach())
    for _ in range(60):
        opt.zero_grad()
        task.loss(task.model, (x, y)).backward()
        opt.step()
    assert float(task.loss(task.model, (x, y)).detach()) < 0.3 * first
    ev = task.evaluate(task.model.eval(), task.val_data)
    assert task.headline in ev
    assert all(math.isfinite(v) for v in ev.values())
