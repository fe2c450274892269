"""Effective pair interactions of a multi-component bcc alloy (after Zhang et al. 2020).

Energy model of a configuration σ of an N-site periodic bcc supercell with K species:

    E(σ) = Σ_a μ_a n_a(σ) + Σ_{s ≤ S} Σ_{a<b} V_s^{ab} N_s^{ab}(σ) + ε,   ε ~ N(0, σ_E²),

where n_a are species counts (their coefficients absorb like-pair terms) and N_s^{ab} the
unlike-pair counts of shell s (:mod:`~scidl.workloads.alloy_epi.lattice`). The synthetic
truth uses S = ``true_shells``; the fits try S = 1 … ``max_shells``:

* closed form: Bayesian regularised regression by evidence maximisation
  (:mod:`~scidl.workloads.alloy_epi.bayes`), posterior std per V_s^{ab}, BIC over S;
* network path (trained by the trainer): a linear (optionally MLP) model on standardised
  features of ``fit_shells`` shells with an MSE loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from scidl.workloads.alloy_epi.bayes import BayesFit, bic, fit_evidence
from scidl.workloads.alloy_epi.lattice import neighbour_table, pair_counts
from scidl.workloads.base import BuildContext, Task, Width, Workload, WorkloadConfig
from scidl.workloads.common.nets import mlp


class AlloyEPIConfig(WorkloadConfig):
    """Settings of the ``alloy_epi`` workload (energies in eV per supercell)."""

    n_species: int = Field(4, ge=2, le=8, description="number of chemical species K")
    supercell: int = Field(4, ge=2, description="n: n x n x n conventional cubes, N = 2 n³ sites")
    true_shells: int = Field(3, ge=1, le=6, description="shells with non-zero true EPIs")
    max_shells: int = Field(6, ge=1, le=6, description="largest shell cut-off tried by BIC")
    epi_scale: float = Field(0.02, gt=0, description="typical |V| of shell 1 (eV)")
    epi_decay: float = Field(0.5, gt=0, le=1, description="|V_s| ∝ epi_decay^(s-1)")
    noise_std: float = Field(0.05, gt=0, description="σ_E, noise on each cell energy (eV)")
    n_train: int = Field(400, ge=10, description="training configurations")
    n_test: int = Field(1000, ge=10, description="test configurations")
    composition_concentration: float = Field(
        2.0, gt=0, description="Dirichlet concentration of each cell's random composition"
    )
    fit_shells: int | None = Field(
        None, ge=1, le=6, description="shells of the network model (None: the BIC choice)"
    )
    hidden: list[Width] = Field(default_factory=list, description="MLP hidden widths ([]: linear)")


@dataclass(frozen=True)
class AlloyData:
    """Features and energies of one split: ``comp`` (n, K), ``pairs`` (n, shells, K(K−1)/2)."""

    comp: np.ndarray
    pairs: np.ndarray
    energy: np.ndarray

    def design(self, shells: int) -> np.ndarray:
        return self.pairs[:, :shells].reshape(len(self.energy), -1)

    def subset(self, n: int) -> AlloyData:
        return AlloyData(self.comp[:n], self.pairs[:n], self.energy[:n])


@dataclass(frozen=True)
class AlloyProblem:
    """The synthetic truth and the two splits."""

    mu: np.ndarray
    epi: np.ndarray  # (true_shells, K(K−1)/2)
    train: AlloyData
    test: AlloyData
    noise_std: float


def make_problem(cfg: AlloyEPIConfig, seed: int) -> AlloyProblem:
    """Random truth (μ, V), random-composition random configurations and noisy energies."""
    rng = np.random.default_rng(seed)
    k = cfg.n_species
    n_pair = k * (k - 1) // 2
    mu = rng.uniform(-0.5, 0.5, size=k)
    mag = cfg.epi_scale * cfg.epi_decay ** np.arange(cfg.true_shells)[:, None]
    epi = mag * rng.uniform(0.5, 1.0, (cfg.true_shells, n_pair)) * rng.choice([-1, 1], (cfg.true_shells, n_pair))
    tables = neighbour_table(cfg.supercell, max(cfg.max_shells, cfg.true_shells, cfg.fit_shells or 0))
    n_sites = tables[0].shape[0]

    def split(n: int) -> AlloyData:
        p = rng.dirichlet(np.full(k, cfg.composition_concentration), size=n)
        u = rng.random((n, n_sites))
        configs = (u[:, :, None] > np.cumsum(p, axis=1)[:, None, :]).sum(axis=2)
        configs = np.minimum(configs, k - 1)
        comp = np.stack([(configs == a).sum(axis=1) for a in range(k)], axis=1).astype(float)
        pairs = np.concatenate([
            pair_counts(configs[i:i + 256], tables, k, unlike_only=True)
            for i in range(0, n, 256)
        ])
        e = comp @ mu + np.einsum("nsp,sp->n", pairs[:, :cfg.true_shells], epi)
        return AlloyData(comp, pairs, e + rng.normal(0.0, cfg.noise_std, n))

    return AlloyProblem(mu, epi, split(cfg.n_train), split(cfg.n_test), cfg.noise_std)


def shell_scan(prob: AlloyProblem, max_shells: int, n_train: int | None = None) -> list[dict[str, Any]]:
    """Closed-form fit for every cut-off S = 1 … max_shells: BIC, evidence, test RMSE."""
    train = prob.train if n_train is None else prob.train.subset(n_train)
    n = len(train.energy)
    rows = []
    for s in range(1, max_shells + 1):
        fit = fit_evidence(train.design(s), train.energy, train.comp)
        rss = float(np.sum((train.energy - fit.predict(train.design(s), train.comp)) ** 2))
        pred = fit.predict(prob.test.design(s), prob.test.comp)
        rmse = float(np.sqrt(np.mean((pred - prob.test.energy) ** 2)))
        k = fit.coef.size + fit.fixed.size
        rows.append({"shells": s, "bic": bic(rss, n, k), "log_evidence": fit.log_evidence,
                     "test_rmse": rmse, "train_rmse": float(np.sqrt(rss / n)), "fit": fit})
    return rows


def coverage(fit: BayesFit, prob: AlloyProblem, shells: int) -> dict[str, float]:
    """Share of fitted V within 1σ / 2σ of the truth (truth = 0 beyond ``true_shells``)."""
    truth = np.zeros((shells, prob.epi.shape[1]))
    m = min(shells, prob.epi.shape[0])
    truth[:m] = prob.epi[:m]
    z = (fit.coef - truth.ravel()) / fit.std
    return {"within_1sigma": float(np.mean(np.abs(z) <= 1)),
            "within_2sigma": float(np.mean(np.abs(z) <= 2)),
            "z_rms": float(np.sqrt(np.mean(z**2)))}


def closed_form_summary(prob: AlloyProblem, max_shells: int) -> dict[str, float]:
    """BIC choice, its test RMSE / σ_E and the coverage of the reported uncertainties."""
    rows = shell_scan(prob, max_shells)
    best = min(rows, key=lambda r: r["bic"])
    out = {"bic_best_shells": float(best["shells"]),
           "bayes_test_rmse": best["test_rmse"],
           "bayes_test_rmse_ratio": best["test_rmse"] / prob.noise_std,
           "bayes_noise_std_est": best["fit"].noise_std}
    out.update(coverage(best["fit"], prob, best["shells"]))
    return out


class _Standardise:
    def __init__(self, a: np.ndarray) -> None:
        self.mean, self.std = a.mean(axis=0), a.std(axis=0) + 1e-12

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((a - self.mean) / self.std, dtype=torch.float32)


class _Whiten:
    """PCA whitening fitted on the training features: x ↦ (x − x̄) V Σ⁻¹ √n.

    A linear reparameterisation (null directions, e.g. Σ_a n_a = N, dropped), so a linear
    model keeps its solution while gradient descent sees a condition number of 1.
    """

    def __init__(self, a: np.ndarray) -> None:
        self.mean = a.mean(axis=0)
        _, s, vt = np.linalg.svd(a - self.mean, full_matrices=False)
        keep = s > s[0] * 1e-9
        self.proj = vt[keep].T / s[keep] * np.sqrt(len(a))

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((a - self.mean) @ self.proj, dtype=torch.float32)


def _features(d: AlloyData, shells: int) -> np.ndarray:
    return np.concatenate([d.comp, d.design(shells)], axis=1)


class AlloyEPI(Workload):
    """Registered as ``alloy_epi``."""

    name = "alloy_epi"
    description = "bcc alloy pair-interaction regression: Bayesian evidence fit, BIC over shells, network path"
    Config = AlloyEPIConfig
    # Full-batch Adam on whitened features: one step per epoch, 300 steps reach the LS fit.
    defaults = {"train": {"epochs": 300, "log_every": 25, "eval_every": 100},
                "optim": {"lr": 3e-2, "schedule": "cosine"},
                "checkpoint": {"every_steps": 100}}

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, AlloyEPIConfig)
        prob = make_problem(cfg, ctx.seed)
        summary = closed_form_summary(prob, cfg.max_shells)
        shells = cfg.fit_shells or int(summary["bic_best_shells"])
        fx, fy = _Whiten(_features(prob.train, shells)), _Standardise(prob.train.energy)
        train = TensorDataset(fx(_features(prob.train, shells)), fy(prob.train.energy)[:, None])
        val = (fx(_features(prob.test, shells)), prob.test.energy)
        model = mlp(train.tensors[0].shape[1], cfg.hidden, 1, "silu")
        noise = cfg.noise_std

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return torch.mean((m(x) - y) ** 2)

        def evaluate(m: nn.Module, data: Any) -> dict[str, float]:
            x, e = data
            pred = m(x)[:, 0].detach().double().numpy() * fy.std + fy.mean
            rmse = float(np.sqrt(np.mean((pred - e) ** 2)))
            return {"test_rmse": rmse, "test_rmse_ratio": rmse / noise,
                    "fit_shells": float(shells), **summary}

        return Task(model=model, train_data=train, loss=loss, evaluate=evaluate, val_data=val,
                    headline="test_rmse_ratio", higher_is_better=False,
                    full_batch=True, extras={"problem": prob})
