"""Bayesian regularised linear regression by evidence maximisation, and BIC model selection.

Model: y = C a + X w + ε, ε ~ N(0, β⁻¹ I), prior w ~ N(0, α⁻¹ I), flat prior on a (the
composition / point terms). Integrating out a projects C away: with P = I − C C⁺,
ỹ = P y and X̃ = P X, the posterior of w is Gaussian with

    S = (α I + β X̃ᵀX̃)⁻¹,   m = β S X̃ᵀ ỹ,

and α, β maximise the (restricted) evidence by MacKay's fixed point

    γ = Σ_i λ_i / (α + λ_i)  (λ_i: eigenvalues of β X̃ᵀX̃),  α = γ / mᵀm,
    β = (n − r_C − γ) / ‖ỹ − X̃ m‖²,

with r_C the rank of C. Reported uncertainties are the posterior standard deviations
√diag(S). BIC = n ln(RSS/n) + k ln n with k the number of fitted coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BayesFit:
    """Result of :func:`fit_evidence`.

    Attributes:
        coef: posterior mean of the penalised coefficients w.
        std: posterior standard deviation of each w.
        fixed: least-squares coefficients a of the unpenalised columns given w.
        alpha: prior precision of w.  beta: noise precision.  gamma: effective parameters.
        log_evidence: restricted log marginal likelihood at (α, β).
        iterations: fixed-point iterations used.
    """

    coef: np.ndarray
    std: np.ndarray
    fixed: np.ndarray
    alpha: float
    beta: float
    gamma: float
    log_evidence: float
    iterations: int

    @property
    def noise_std(self) -> float:
        return float(1.0 / np.sqrt(self.beta))

    def predict(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        return x @ self.coef + c @ self.fixed


def _project_out(c: np.ndarray, *arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    u = u[:, s > s[0] * 1e-10]
    return [a - u @ (u.T @ a) for a in arrays], u.shape[1]


def fit_evidence(
    x: np.ndarray, y: np.ndarray, c: np.ndarray | None = None,
    max_iter: int = 500, tol: float = 1e-8,
) -> BayesFit:
    """Evidence-maximising Bayesian ridge regression of y on [c | x] (c unpenalised)."""
    n, k = x.shape
    if c is None:
        c = np.zeros((n, 0))
    if c.shape[1]:
        (xt, yt), r_c = _project_out(c, x, y)
    else:
        xt, yt, r_c = x, y, 0
    n_eff = n - r_c
    xtx, xty = xt.T @ xt, xt.T @ yt
    lam0 = np.clip(np.linalg.eigvalsh(xtx), 0.0, None)
    alpha, beta = 1.0, 1.0 / max(float(yt.var()), 1e-12)
    it = 0
    while it < max_iter:
        it += 1
        m = np.linalg.solve(alpha * np.eye(k) + beta * xtx, beta * xty)
        gamma = float(np.sum(beta * lam0 / (alpha + beta * lam0)))
        rss = float(np.sum((yt - xt @ m) ** 2))
        new_alpha = gamma / max(float(m @ m), 1e-300)
        new_beta = max(n_eff - gamma, 1e-6) / max(rss, 1e-300)
        done = abs(np.log(new_alpha / alpha)) < tol and abs(np.log(new_beta / beta)) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    a_mat = alpha * np.eye(k) + beta * xtx
    cov = np.linalg.inv(a_mat)
    m = beta * cov @ xty
    rss = float(np.sum((yt - xt @ m) ** 2))
    _, logdet = np.linalg.slogdet(a_mat)
    log_ev = 0.5 * (k * np.log(alpha) + n_eff * np.log(beta) - beta * rss - alpha * m @ m
                    - logdet - n_eff * np.log(2 * np.pi))
    fixed = np.linalg.lstsq(c, y - x @ m, rcond=None)[0] if c.shape[1] else np.zeros(0)
    return BayesFit(coef=m, std=np.sqrt(np.diag(cov)), fixed=fixed, alpha=float(alpha),
                    beta=float(beta), gamma=gamma, log_evidence=float(log_ev), iterations=it)


def bic(rss: float, n: int, k: int) -> float:
    """Bayesian information criterion for Gaussian errors: n ln(RSS/n) + k ln n."""
    return float(n * np.log(rss / n) + k * np.log(n))
