"""Gene-expression autoencoder with node saliency (Fan et al. 2018, arXiv 1901.11152).

An autoencoder with sigmoid latent nodes is trained without labels,

    z = sigmoid(W₂ relu(W₁ x)),   x̂ = V₂ relu(V₁ z),   loss = ‖x − x̂‖² / n_features,

on per-feature standardised inputs. Afterwards each latent node is ranked for a binary
pair of classes by supervised node saliency (SNS, lower = better, :mod:`scidl.analysis.saliency`)
on held-out samples, and checked against the node's own ROC AUC; PCA components with
the same budget are the linear baseline. Data: :mod:`scidl.workloads.geneexpr_ans.data`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import TensorDataset

from scidl.analysis.saliency import node_auc, saliency_report
from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.geneexpr_ans.data import (
    LabelledData,
    digits,
    stratified_split,
    synthetic_expression,
)
from scidl.workloads.geneexpr_ans.nets import SigmoidAE

_DEFAULT_PAIRS = {
    "synthetic": [["tissue0", "tissue1"], ["tissue0_normal", "tissue0_tumour"]],
    "digits": [["digit0", "digit1"], ["digit3", "digit8"]],
}


class GeneExprConfig(WorkloadConfig):
    """Settings of the ``geneexpr_ans`` workload."""

    dataset: Literal["synthetic", "digits"] = Field("synthetic", description="data source")
    n_tissues: int = Field(6, ge=2, description="synthetic: tissue types (× normal/tumour)")
    n_genes: int = Field(2000, ge=50, description="synthetic: genes")
    per_class: int = Field(100, ge=10, description="synthetic: samples per class")
    n_programs: int = Field(40, ge=6, description="synthetic: expression programs")
    genes_per_program: int = Field(60, ge=1, description="synthetic: genes per program")
    tumour_effect: float = Field(1.5, ge=0, description="synthetic: tumour program activation")
    noise_std: float = Field(1.0, ge=0, description="synthetic: per-gene noise (log scale)")
    latent: int = Field(32, ge=2, description="sigmoid latent nodes")
    hidden: int = Field(256, ge=4, description="hidden width of encoder and decoder")
    bins: int = Field(10, ge=2, description="histogram bins for NED/SNS")
    val_fraction: float = Field(0.3, gt=0, lt=1, description="held-out share of every class")
    pairs: list[tuple[str, str]] | None = Field(
        None, description="binary pairs [class_a, class_b] to score (None: dataset default)"
    )


def load_data(cfg: GeneExprConfig, seed: int) -> LabelledData:
    if cfg.dataset == "digits":
        return digits()
    return synthetic_expression(
        seed, cfg.n_tissues, cfg.n_genes, cfg.per_class, cfg.n_programs,
        cfg.genes_per_program, cfg.tumour_effect, cfg.noise_std,
    )


def pair_tag(pair: tuple[str, str] | list[str]) -> str:
    return f"{pair[0]}_vs_{pair[1]}"


def pair_metrics(codes: np.ndarray, pcs: np.ndarray, data: LabelledData,
                 pair: tuple[str, str] | list[str], bins: int) -> dict[str, float]:
    """SNS ranking vs node AUC for one pair, and the best PCA component's AUC."""
    a, b = data.pair_mask(pair[0]), data.pair_mask(pair[1])
    keep = a | b
    labels = a[keep]
    rep = saliency_report(codes[keep], labels, bins)
    best = int(rep["order"][0])
    rho = spearmanr(-rep["sns"], rep["auc"]).statistic  # lower SNS = better: compare −SNS
    pca_auc = node_auc(pcs[keep], labels)
    return {
        "best_sns_node_auc": float(rep["auc"][best]),
        "best_sns": float(rep["sns"][best]),
        "best_sns_node_ned": float(rep["ned"][best]),
        "max_node_auc": float(rep["auc"].max()),
        "spearman_neg_sns_auc": float(rho),
        "pca_best_auc": float(pca_auc.max()),
        "pca_pc1_auc": float(pca_auc[0]),
    }


def encode(model: SigmoidAE, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.encoder(x).double().numpy()


class GeneExprANS(Workload):
    """Registered as ``geneexpr_ans``."""

    name = "geneexpr_ans"
    description = "gene-expression autoencoder with sigmoid latents; node saliency (NED, SNS) vs AUC and PCA"
    Config = GeneExprConfig
    defaults = {"train": {"epochs": 40, "batch_size": 32}, "optim": {"lr": 1e-3}}

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, GeneExprConfig)
        from sklearn.decomposition import PCA

        data = load_data(cfg, ctx.seed)
        tr, va = stratified_split(data.y, cfg.val_fraction, ctx.seed)
        mean, std = data.x[tr].mean(axis=0), data.x[tr].std(axis=0) + 1e-6
        x = torch.from_numpy((data.x - mean) / std)
        val = LabelledData(data.x[va], data.y[va], data.classes)
        pca = PCA(n_components=min(cfg.latent, len(tr), x.shape[1]), random_state=ctx.seed)
        pca.fit(x[tr].numpy())
        pcs = pca.transform(x[va].numpy())
        pairs = cfg.pairs or _DEFAULT_PAIRS[cfg.dataset]
        for p in pairs:  # fail at build time, not at the first evaluation
            val.pair_mask(p[0]), val.pair_mask(p[1])
        model = SigmoidAE(x.shape[1], cfg.hidden, cfg.latent)
        x_val = x[va]

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            xb = batch[0] if isinstance(batch, (list, tuple)) else batch
            return torch.mean((m(xb) - xb) ** 2)

        def evaluate(m: nn.Module, xv: torch.Tensor) -> dict[str, float]:
            assert isinstance(m, SigmoidAE)
            out = {"recon_mse": float(torch.mean((m(xv) - xv) ** 2))}
            codes = encode(m, xv)
            for p in pairs:
                for k, v in pair_metrics(codes, pcs, val, p, cfg.bins).items():
                    out[f"{pair_tag(p)}/{k}"] = v
            return out

        return Task(
            model=model, train_data=TensorDataset(x[tr]), loss=loss, evaluate=evaluate,
            val_data=x_val, headline=f"{pair_tag(pairs[0])}/best_sns_node_auc",
            higher_is_better=True,
            extras={"val": val, "pcs": pcs, "pairs": pairs, "pca": pca},
        )
