"""VAE order parameter for the 2-D Ising order–disorder transition (Yin, Pei, Gao 2021).

Data: checkerboard-Metropolis configurations of an ``L x L`` Ising lattice over a
temperature sweep (:mod:`scidl.workloads.ising_vae.mc`). Model: a VAE with a 2-D latent
space trained on all temperatures without labels,

    loss = E_q[-log p(x|z)] + β_KL · KL(q(z|x) || N(0, I)),   x ∈ {0, 1}^{L²} (Bernoulli).

Order parameter: the Manhattan distance of a configuration's latent mean μ(x) from the
centroid c of the disordered phase's latent means (configurations with T ≥ ``t_disordered``),

    OP(x) = Σ_k |μ_k(x) − c_k|,   OP(T) = ⟨OP(x)⟩_T.

Evaluation: Pearson r between OP(T) and ⟨|m|⟩_T over the sweep, and the transition
temperature as the midpoint of a tanh step fitted to OP(T) (the same estimator applied to
⟨|m|⟩_T and the susceptibility peak give the lattice's finite-size pseudo-critical points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from scipy.optimize import curve_fit
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.ising_vae.mc import TC_ONSAGER, magnetisation, sample_sweep
from scidl.workloads.ising_vae.nets import IsingVAE


class IsingVAEConfig(WorkloadConfig):
    """Settings of the ``ising_vae`` workload."""

    lattice_size: int = Field(16, ge=4, description="L of the L x L periodic lattice (even)")
    t_min: float = Field(1.5, gt=0, description="lowest temperature of the sweep (J/k_B)")
    t_max: float = Field(3.5, gt=0, description="highest temperature of the sweep")
    n_temps: int = Field(24, ge=4, description="temperatures, evenly spaced in [t_min, t_max]")
    chains: int = Field(16, ge=2, description="independent Markov chains per temperature")
    val_chains: int = Field(4, ge=1, description="chains per temperature held out for evaluation")
    burn_in: int = Field(600, ge=0, description="Metropolis sweeps before recording")
    samples_per_chain: int = Field(16, ge=1, description="configurations recorded per chain")
    thin: int = Field(10, ge=1, description="sweeps between recorded configurations")
    latent_dim: int = Field(2, ge=1, description="VAE latent dimensions (the paper uses 2)")
    hidden: int = Field(256, ge=4, description="width of the encoder/decoder hidden layers")
    kl_weight: float = Field(
        4.0, ge=0, description="β_KL, weight of the KL term (β > 1 keeps the latent on |m|)"
    )
    t_disordered: float = Field(
        3.0, gt=0, description="configurations with T ≥ this define the disordered centroid"
    )


def vae_terms(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction −log p(x|z), KL) per configuration, averaged over the batch."""
    logits, mu, logvar = model(x)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return rec, kl


def _unbatch(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def tanh_step(t: np.ndarray, lo: float, hi: float, tc: float, width: float) -> np.ndarray:
    """lo + (hi − lo) · (1 − tanh((T − T_c)/w)) / 2: a smooth step from hi (T ≪ T_c) to lo."""
    return lo + (hi - lo) * 0.5 * (1.0 - np.tanh((t - tc) / width))


def transition_temperature(temps: np.ndarray, values: np.ndarray) -> float:
    """Midpoint T_c of a tanh step fitted to a decreasing curve; half-height crossing fallback."""
    p0 = [values[-3:].mean(), values[:3].mean(), float(np.median(temps)), 0.2]
    try:
        popt, _ = curve_fit(tanh_step, temps, values, p0=p0, maxfev=20000)
        if temps[0] <= popt[2] <= temps[-1]:
            return float(popt[2])
    except RuntimeError:
        pass
    half = 0.5 * (values[:3].mean() + values[-3:].mean())
    below = np.nonzero(values < half)[0]
    return float(temps[below[0]]) if len(below) else float("nan")


def susceptibility_peak(temps: np.ndarray, abs_m: np.ndarray, m2: np.ndarray, n: int) -> float:
    """T of the maximum of χ' = N(⟨m²⟩ − ⟨|m|⟩²)/T, the finite-size pseudo-critical point."""
    chi = n * (m2 - abs_m**2) / temps
    return float(temps[int(np.argmax(chi))])


def order_parameter_curve(model: nn.Module, val: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-temperature ⟨OP⟩, ⟨|m|⟩, ⟨m²⟩ and the latent means of every configuration.

    ``model`` is anything with ``encode(x) -> (μ, log σ²)`` (an :class:`IsingVAE`).
    """
    model.eval()
    encode: Any = getattr(model, "encode")  # noqa: B009 - duck-typed encoder
    with torch.no_grad():
        mu = encode(val["x"])[0].double().numpy()
    t = val["temps"]
    centroid = mu[t >= val["t_disordered"]].mean(axis=0)
    op = np.abs(mu - centroid).sum(axis=1)  # Manhattan (L1) distance
    temps = np.unique(t)
    mean = lambda v: np.array([v[t == tt].mean() for tt in temps])  # noqa: E731
    return {
        "temps": temps, "op": mean(op), "abs_m": mean(np.abs(val["m"])),
        "m2": mean(val["m"] ** 2), "mu": mu, "centroid": centroid,
    }


def evaluate(model: nn.Module, val: dict[str, Any]) -> dict[str, float]:
    """Pearson(OP, |m|), T_c from OP, the same estimator on |m|, χ' peak and the ELBO terms.

    The reconstruction is decoded at z = μ (no sampling), so evaluation draws no random
    numbers and leaves the training RNG streams untouched.
    """
    curve = order_parameter_curve(model, val)
    temps, op, abs_m = curve["temps"], curve["op"], curve["abs_m"]
    x = val["x"]
    with torch.no_grad():
        mu, logvar = model.encode(x)  # type: ignore[operator]
        rec = F.binary_cross_entropy_with_logits(model.decoder(mu), x, reduction="sum")  # type: ignore[operator]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    n = x.shape[1]
    return {
        "pearson_abs_m": float(np.corrcoef(op, abs_m)[0, 1]),
        "tc_order_parameter": transition_temperature(temps, op),
        "tc_abs_m": transition_temperature(temps, abs_m),
        "tc_susceptibility": susceptibility_peak(temps, abs_m, curve["m2"], n),
        "tc_onsager": float(TC_ONSAGER),
        "recon_nll_per_spin": float(rec) / x.numel(),
        "kl": float(kl) / x.shape[0],
    }


def make_data(cfg: IsingVAEConfig, seed: int) -> tuple[TensorDataset, dict[str, Any]]:
    """Sample the sweep and split by chain: the last ``val_chains`` chains are held out."""
    if cfg.val_chains >= cfg.chains:
        raise ValueError("val_chains must be smaller than chains")
    temps = np.linspace(cfg.t_min, cfg.t_max, cfg.n_temps)
    s = sample_sweep(temps, cfg.lattice_size, cfg.chains, cfg.burn_in,
                     cfg.samples_per_chain, cfg.thin, seed)
    x = torch.from_numpy((s.spins.reshape(len(s.spins), -1) > 0).astype(np.float32))
    is_val = s.chain >= cfg.chains - cfg.val_chains
    val = {
        "x": x[torch.from_numpy(is_val)],
        "temps": s.temps[is_val],
        "m": magnetisation(s.spins[is_val].astype(np.float64)),
        "t_disordered": cfg.t_disordered,
    }
    return TensorDataset(x[torch.from_numpy(~is_val)]), val


class IsingVAEWorkload(Workload):
    """Registered as ``ising_vae``."""

    name = "ising_vae"
    description = "2-D Ising Metropolis sweep + 2-D-latent VAE; latent Manhattan distance as order parameter"
    Config = IsingVAEConfig
    defaults = {"train": {"epochs": 20, "batch_size": 128}, "optim": {"lr": 1e-3}}

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, IsingVAEConfig)
        if not cfg.t_min < cfg.t_disordered < cfg.t_max:
            raise ValueError("t_disordered must lie inside (t_min, t_max)")
        train, val = make_data(cfg, ctx.seed)
        model = IsingVAE(cfg.lattice_size**2, cfg.hidden, cfg.latent_dim)
        kl_weight = cfg.kl_weight

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            rec, kl = vae_terms(m, _unbatch(batch))
            return rec + kl_weight * kl

        return Task(
            model=model, train_data=train, loss=loss, evaluate=evaluate, val_data=val,
            headline="pearson_abs_m", higher_is_better=True,
            extras={"tc_onsager": float(TC_ONSAGER)},
        )
