"""ising_vae: Metropolis sampler against exact enumeration, order-parameter maths, workload."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.ising_vae.mc import (
    TC_ONSAGER,
    checkerboard_masks,
    energy_per_spin,
    magnetisation,
    sample_sweep,
)
from scidl.workloads.ising_vae.workload import (
    IsingVAEConfig,
    order_parameter_curve,
    susceptibility_peak,
    tanh_step,
    transition_temperature,
)


def _exact_4x4(temp: float) -> tuple[float, float]:
    """⟨E⟩/N and ⟨|m|⟩ of the 4x4 periodic lattice by summing all 2^16 states."""
    states = np.array(list(itertools.product([-1, 1], repeat=16)), dtype=np.float64)
    spins = states.reshape(-1, 4, 4)
    e, m = energy_per_spin(spins), np.abs(magnetisation(spins))
    w = np.exp(-(e - e.min()) * 16 / temp)
    return float((w * e).sum() / w.sum()), float((w * m).sum() / w.sum())


def test_onsager_constant():
    assert TC_ONSAGER == pytest.approx(2.269185, abs=1e-6)


def test_checkerboard_needs_even_size():
    even, odd = checkerboard_masks(4)
    assert even.sum() == odd.sum() == 8 and not (even & odd).any()
    with pytest.raises(ValueError, match="even"):
        checkerboard_masks(5)


def test_magnetisation_low_and_high_temperature():
    s = sample_sweep(np.array([1.0, 5.0]), size=8, chains=8, burn_in=100, samples=5, thin=2,
                     seed=0)
    m = np.abs(magnetisation(s.spins.astype(float)))
    assert m[s.temps == 1.0].mean() > 0.97
    assert m[s.temps == 5.0].mean() < 0.3
    # ground-state energy −2 per spin is approached at low T
    assert energy_per_spin(s.spins[s.temps == 1.0].astype(float)).mean() < -1.95


def test_sampler_matches_exact_enumeration_4x4():
    temp = 2.5
    e_exact, m_exact = _exact_4x4(temp)
    e_other, _ = _exact_4x4(2.3)
    s = sample_sweep(np.array([temp]), size=4, chains=256, burn_in=50, samples=40, thin=2,
                     seed=3)
    e = energy_per_spin(s.spins.astype(float)).reshape(40, 256).mean(axis=0)  # per chain
    m = np.abs(magnetisation(s.spins.astype(float))).reshape(40, 256).mean(axis=0)
    tol_e, tol_m = 5 * e.std() / np.sqrt(256), 5 * m.std() / np.sqrt(256)
    assert abs(e_exact - e_other) > tol_e  # the check could catch a 10 % error in T
    assert e.mean() == pytest.approx(e_exact, abs=tol_e)
    assert m.mean() == pytest.approx(m_exact, abs=tol_m)


def test_data_depends_only_on_seed():
    a = sample_sweep(np.array([2.0, 3.0]), 4, 2, 5, 2, 1, seed=11)
    b = sample_sweep(np.array([2.0, 3.0]), 4, 2, 5, 2, 1, seed=11)
    c = sample_sweep(np.array([2.0, 3.0]), 4, 2, 5, 2, 1, seed=12)
    assert np.array_equal(a.spins, b.spins) and not np.array_equal(a.spins, c.spins)


def test_transition_estimator_recovers_planted_step():
    temps = np.linspace(1.5, 3.5, 21)
    values = tanh_step(temps, 0.1, 1.9, 2.4, 0.15)
    assert transition_temperature(temps, values) == pytest.approx(2.4, abs=1e-3)


def test_susceptibility_peak():
    temps = np.array([2.0, 2.2, 2.4, 2.6])
    abs_m = np.array([0.9, 0.8, 0.5, 0.3])
    m2 = abs_m**2 + np.array([0.001, 0.01, 0.05, 0.02])
    assert susceptibility_peak(temps, abs_m, m2, 64) == 2.4


class _Encoder(torch.nn.Module):
    """encode(x) = (first two inputs, zeros): a latent we can compute by hand."""

    def encode(self, x):
        return x[:, :2], torch.zeros_like(x[:, :2])


def test_order_parameter_is_manhattan_distance_from_disordered_centroid():
    x = torch.tensor([[3.0, 1.0], [1.0, -1.0], [0.0, 0.0], [2.0, 2.0]])
    val = {"x": x, "temps": np.array([1.0, 1.0, 3.0, 3.0]), "m": np.array([1.0, -1.0, 0.1, 0.1]),
           "t_disordered": 2.5}
    c = order_parameter_curve(_Encoder(), val)
    np.testing.assert_allclose(c["centroid"], [1.0, 1.0])
    # T=1: |3−1|+|1−1| = 2 and |1−1|+|−1−1| = 2; T=3: 2 and 2
    np.testing.assert_allclose(c["op"], [2.0, 2.0])
    np.testing.assert_allclose(c["abs_m"], [1.0, 0.1])


def _tiny() -> dict:
    return {"lattice_size": 8, "t_min": 1.6, "t_max": 3.4, "n_temps": 8, "chains": 6,
            "val_chains": 2, "burn_in": 150, "samples_per_chain": 8, "thin": 4, "hidden": 64}


def test_workload_trains_to_order_parameter():
    """A tiny sweep: a few hundred Adam steps give Pearson(OP, |m|) > 0.9."""
    wl = get_workload("ising_vae")
    torch.manual_seed(0)
    task = wl.build(IsingVAEConfig(**_tiny()), BuildContext(seed=0))
    assert task.headline == "pearson_abs_m" and task.higher_is_better
    x = task.train_data.tensors[0]
    opt = torch.optim.Adam(task.model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(150):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = task.loss(task.model, [x[idx]])
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    task.model.eval()
    with torch.no_grad():
        out = task.evaluate(task.model, task.val_data)
    assert out["pearson_abs_m"] > 0.9
    assert 1.6 < out["tc_order_parameter"] < 3.4


def test_config_validation():
    wl = get_workload("ising_vae")
    with pytest.raises(ValueError, match="t_disordered"):
        wl.build(IsingVAEConfig(**{**_tiny(), "t_disordered": 5.0}), BuildContext(seed=0))
    with pytest.raises(ValueError, match="val_chains"):
        wl.build(IsingVAEConfig(**{**_tiny(), "val_chains": 6}), BuildContext(seed=0))
