"""Synthetic gas optics: a line-by-line absorption sum and a lookup-table interpolator.

The "expensive" reference is a line-by-line (LBL) calculation in the spirit of RRTMGP's
training data (Veerman et al. 2021): two gases, each with hundreds of spectral lines on a
fine wavenumber grid. For one atmospheric layer with pressure ``p`` [hPa], temperature
``T`` [K] and volume mixing ratios ``q1`` (water-vapour-like, self-broadening and a
self-continuum) and ``q2`` (a minor gas), the monochromatic optical depth is

    tau(nu) = A * p * [ q1 * k1(nu; p, T, q1) + q2 * k2(nu; p, T) + q1^2 * p * c(T) ]

    k_g(nu) = sum_i S_i(T) * V(nu - nu_i; gamma_L,i, gamma_D)                     (lines)
    S_i(T) = S_i0 * (T0 / T) * exp(-c2 * E_i * (1/T - 1/T0))                     (strength)
    gamma_L,i = g_i * (p / p0) * (T0 / T)^n_i * (1 + (s - 1) * q1)               (Lorentz)
    gamma_D = d0 * sqrt(T / T0)                                                  (Doppler)

with ``V`` the pseudo-Voigt profile (Thompson, Cox & Hastings 1987). The band quantity
is the *effective* band optical depth (transmittance-weighted, so it saturates):

    tau_b = -log( mean_{nu in band b} exp(-tau(nu)) )

The fast classical reference is a 4-D table of ``log tau_b`` on a grid in
``(log p, T, log q1, log q2)`` with multilinear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

T0 = 296.0  # reference temperature [K]
P0 = 1013.25  # reference pressure [hPa]
C2 = 1.4388  # second radiation constant [cm K]

# Input ranges (uniform in these coordinates): log p [hPa], T [K], log q1, log q2.
INPUT_LOW = (math.log(1.0), 160.0, math.log(1e-6), math.log(1e-8))
INPUT_HIGH = (math.log(1050.0), 320.0, math.log(3e-2), math.log(1e-5))
INPUT_NAMES = ("log_p", "T", "log_q1", "log_q2")


@dataclass(frozen=True)
class SpectralLines:
    """Line parameters of one gas (all 1-D tensors of length ``n_lines``).

    Attributes:
        centre: line centre as a fractional grid position in [0, n_nu).
        strength: S_i0, line strength at T0.
        energy: E_i, lower-state energy [cm^-1] (controls the T dependence).
        width: g_i, Lorentz half-width at (p0, T0) in grid units.
        t_exp: n_i, temperature exponent of the Lorentz width.
    """

    centre: torch.Tensor
    strength: torch.Tensor
    energy: torch.Tensor
    width: torch.Tensor
    t_exp: torch.Tensor


@dataclass(frozen=True)
class Spectroscopy:
    """Everything that defines the synthetic line-by-line model (fixed by a seed)."""

    gases: tuple[SpectralLines, SpectralLines]
    n_nu: int
    n_bands: int
    self_broadening: float = 5.0  # s: self- vs air-broadening efficiency of gas 1
    doppler: float = 1.5  # d0: Doppler half-width at T0 in grid units
    amount: float = 5.0  # A: optical-depth scale
    continuum: float = 2e-4  # self-continuum coefficient of gas 1
    cutoff: int = 32  # line wings are truncated at +- cutoff grid points


def make_spectroscopy(
    seed: int, n_lines: int = 128, n_nu: int = 1024, n_bands: int = 16
) -> Spectroscopy:
    """Draw two synthetic line lists from ``seed`` (same seed, same spectroscopy)."""
    if n_nu % n_bands:
        raise ValueError(f"n_nu={n_nu} must be a multiple of n_bands={n_bands}")
    g = torch.Generator().manual_seed(10_000 + seed)

    def lines(log_s_mean: float, width_scale: float) -> SpectralLines:
        u = lambda: torch.rand(n_lines, generator=g, dtype=torch.float64)  # noqa: E731
        return SpectralLines(
            centre=u() * n_nu,
            strength=torch.exp(log_s_mean + 2.0 * torch.randn(n_lines, generator=g).double()),
            energy=u() * 1500.0,
            width=width_scale * (0.5 + u()),
            t_exp=0.5 + 0.3 * u(),
        )

    return Spectroscopy(gases=(lines(1.0, 6.0), lines(3.0, 4.0)), n_nu=n_nu, n_bands=n_bands)


def _voigt_width(gamma_l: torch.Tensor, gamma_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-Voigt half-width ``f`` and Lorentz fraction ``eta`` (Thompson et al. 1987).

    f^5 = fG^5 + 2.69269 fG^4 fL + 2.42843 fG^3 fL^2 + 4.47163 fG^2 fL^3 + 0.07842 fG fL^4 + fL^5
    eta = 1.36603 r - 0.47719 r^2 + 0.11116 r^3,  r = fL / f
    """
    fl, fg = gamma_l, gamma_d
    f = (
        fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2
        + 4.47163 * fg**2 * fl**3 + 0.07842 * fg * fl**4 + fl**5
    ) ** 0.2
    r = fl / f
    return f, 1.36603 * r - 0.47719 * r**2 + 0.11116 * r**3


def pseudo_voigt(x: torch.Tensor, gamma_l: torch.Tensor, gamma_d: torch.Tensor) -> torch.Tensor:
    """Pseudo-Voigt profile (unit area) ``V = eta L(x; f) + (1 - eta) G(x; f)``.

    ``L(x; f) = (f / pi) / (x^2 + f^2)`` and ``G(x; f) = sqrt(ln 2 / pi) / f exp(-ln 2 x^2 / f^2)``
    are the Lorentz and Gauss profiles of half-width ``f`` (see :func:`_voigt_width`).
    """
    f, eta = _voigt_width(gamma_l, gamma_d)
    lorentz = f / math.pi / (x**2 + f**2)
    gauss = math.sqrt(math.log(2.0) / math.pi) / f * torch.exp(-math.log(2.0) * (x / f) ** 2)
    return eta * lorentz + (1.0 - eta) * gauss


def _absorption(
    lines: SpectralLines, spec: Spectroscopy, p: torch.Tensor, t: torch.Tensor,
    q1: torch.Tensor, self_broadened: bool,
) -> torch.Tensor:
    """Absorption coefficient k(nu) of one gas on the grid, shape ``[batch, n_nu]``.

    Same sum as :func:`pseudo_voigt` per line, with the per-line factors hoisted out of
    the inner (line x grid point) loop: ``a_L / (x^2 + f^2) + a_G exp(-b x^2)``.
    """
    w = spec.cutoff
    offsets = torch.arange(-w, w + 1, dtype=torch.float64)
    centre_idx = torch.floor(lines.centre)  # [L]
    grid_pos = centre_idx[:, None] + offsets  # [L, 2w+1] grid points near each line
    x2 = ((grid_pos - lines.centre[:, None]) ** 2).float()  # squared distance to the centre
    tt = t[:, None]
    strength = lines.strength * (T0 / tt) * torch.exp(-C2 * lines.energy * (1 / tt - 1 / T0))
    broad = 1.0 + (spec.self_broadening - 1.0) * q1[:, None] if self_broadened else 1.0
    gamma_l = lines.width * (p[:, None] / P0) * (T0 / tt) ** lines.t_exp * broad  # [B, L]
    gamma_d = spec.doppler * torch.sqrt(tt / T0)  # [B, 1]
    f, eta = _voigt_width(gamma_l, gamma_d)
    a_l = (strength * eta * f / math.pi).float()[..., None]
    f2 = (f * f).float()[..., None]
    a_g = (strength * (1 - eta) * math.sqrt(math.log(2.0) / math.pi) / f).float()[..., None]
    b = (math.log(2.0) / (f * f)).float()[..., None]
    # clamp: exp(-60) ~ 1e-26 is negligible, and avoids slow denormal arithmetic
    contrib = a_l / (x2 + f2) + a_g * torch.exp(-(b * x2).clamp_max(60.0))  # [B, L, 2w+1]
    k = torch.zeros(p.shape[0], spec.n_nu + 2 * w)
    k.index_add_(1, (grid_pos + w).reshape(-1).long(), contrib.reshape(p.shape[0], -1))
    return k[:, w : w + spec.n_nu].double()


def lbl_optical_depth(x: torch.Tensor, spec: Spectroscopy, chunk: int = 256) -> torch.Tensor:
    """Effective band optical depths ``[N, n_bands]`` for inputs ``x = [log p, T, log q1, log q2]``.

    The expensive reference (float64). ``chunk`` bounds the memory of one pass.
    """
    outs = []
    for xb in torch.split(x.double(), chunk):
        p, t, q1, q2 = torch.exp(xb[:, 0]), xb[:, 1], torch.exp(xb[:, 2]), torch.exp(xb[:, 3])
        k1 = _absorption(spec.gases[0], spec, p, t, q1, self_broadened=True)
        k2 = _absorption(spec.gases[1], spec, p, t, q1, self_broadened=False)
        cont = spec.continuum * (q1 * p * (T0 / t) ** 4)[:, None]
        tau = spec.amount * p[:, None] * (q1[:, None] * k1 + q2[:, None] * k2 + q1[:, None] * cont)
        bands = (-tau).reshape(tau.shape[0], spec.n_bands, -1)
        n = bands.shape[-1]
        outs.append(-(torch.logsumexp(bands, dim=-1) - math.log(n)))
    return torch.cat(outs).float()


def sample_columns(n_columns: int, n_layers: int, seed: int) -> torch.Tensor:
    """Layer states ``[n_columns * n_layers, 4]`` of synthetic atmospheric columns.

    A small climatology so that inputs are correlated as in real atmospheres:

    * pressure: ``n_layers`` log-spaced layers from the surface ``p_s ~ U(950, 1040)`` hPa
      to 1.5 hPa;
    * temperature: ``T = T_s (p / p_s)^0.19`` (6.5 K/km lapse rate) down to the tropopause
      temperature ``T_tp ~ U(190, 225)``, then warming by ``U(20, 60)`` K up to 1.5 hPa,
      with ``T_s ~ U(245, 310)``;
    * q1 (water vapour): ``RH * q_sat(T, p)`` with ``RH`` falling from ``U(0.3, 0.95)`` at
      the surface, Magnus formula for ``q_sat``, floored at ``U(2e-6, 6e-6)`` (stratosphere);
    * q2 (ozone-like): ``q_peak exp(-(ln(p / p_peak))^2 / 2.9) + 2e-8`` with
      ``q_peak ~ U(2e-6, 9e-6)``, ``ln p_peak ~ U(ln 5, ln 30)``.

    Values are clipped to the lookup-table box (``INPUT_LOW``..``INPUT_HIGH``).
    """
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n_columns, 1, generator=g)  # noqa: E731
    p_s = u(950.0, 1040.0)
    frac = torch.linspace(0.0, 1.0, n_layers)[None]
    p = p_s * (1.5 / p_s) ** frac  # log-spaced from p_s to 1.5 hPa
    t_s, t_tp, warm = u(245.0, 310.0), u(190.0, 225.0), u(20.0, 60.0)
    t_trop = t_s * (p / p_s) ** 0.19
    p_tp = p_s * (t_tp / t_s) ** (1 / 0.19)  # where the lapse-rate profile meets T_tp
    strat = t_tp + warm * (torch.log(p_tp / p) / torch.log(p_tp / 1.5)).clamp(0, 1)
    t = torch.where(p > p_tp, t_trop, strat)
    t = t + 2.0 * torch.randn(t.shape, generator=g)
    rh = u(0.3, 0.95) * (p / p_s) ** u(1.0, 3.0)
    e_sat = 6.112 * torch.exp(17.67 * (t - 273.15) / (t - 29.65))  # hPa, Magnus
    q1 = torch.maximum(rh * 0.622 * e_sat / p, u(2e-6, 6e-6))
    q_peak, ln_pk = u(2e-6, 9e-6), u(math.log(5.0), math.log(30.0))
    q2 = q_peak * torch.exp(-((torch.log(p) - ln_pk) ** 2) / 2.9) + 2e-8
    x = torch.stack([torch.log(p), t, torch.log(q1), torch.log(q2)], dim=-1).reshape(-1, 4)
    return torch.minimum(torch.maximum(x, torch.tensor(INPUT_LOW)), torch.tensor(INPUT_HIGH))


class LookupTable:
    """Multilinear interpolation of ``log tau_b`` on a regular grid in the four inputs.

    The table holds ``prod(shape)`` line-by-line evaluations; a lookup gathers the 16
    corners of the enclosing cell and blends them with weights
    ``prod_d ((1 - w_d) or w_d)``, then exponentiates.
    """

    def __init__(self, spec: Spectroscopy, shape: tuple[int, int, int, int]) -> None:
        self._init_index(shape)
        axes = [torch.linspace(lo, hi, n) for lo, hi, n in zip(INPUT_LOW, INPUT_HIGH, self.shape, strict=True)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 4)
        self.table = torch.log(lbl_optical_depth(grid, spec))  # [G, n_bands], row-major

    def _init_index(self, shape: tuple[int, int, int, int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        if min(self.shape) < 2:
            raise ValueError(f"lookup table needs >= 2 points per axis, got {self.shape}")
        self.lo = torch.tensor(INPUT_LOW)
        self.hi = torch.tensor(INPUT_HIGH)
        strides, s = [], 1
        for n in reversed(self.shape):
            strides.append(s)
            s *= n
        self.strides = torch.tensor(list(reversed(strides)))
        self.cells = torch.tensor([n - 1 for n in self.shape], dtype=torch.float32)
        # flat offsets of the 16 cell corners: corner c has bit d set -> +1 along axis d
        bits = torch.tensor([[(c >> d) & 1 for d in range(4)] for c in range(16)])
        self.corner_offsets = (bits * self.strides).sum(1)

    @property
    def n_entries(self) -> int:
        return int(self.table.numel())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Band optical depths ``[N, n_bands]`` for inputs ``[N, 4]``."""
        pos = (x - self.lo) / (self.hi - self.lo) * self.cells
        pos = torch.minimum(pos.clamp_min(0.0), self.cells - 1e-6)
        i0 = pos.floor()
        w = pos - i0  # [N, 4]
        base = (i0.long() * self.strides).sum(1)  # [N]
        vals = self.table[base[:, None] + self.corner_offsets]  # [N, 16, n_bands]
        # blend axis by axis: corners with bit d and without bit d pair up
        for d in reversed(range(4)):
            half = vals.shape[1] // 2
            # corner index c = lowbits + 2^d * bit_d; with reversed order the top bit splits
            lo_v, hi_v = vals[:, :half], vals[:, half:]
            wd = w[:, d, None, None]
            vals = lo_v + wd * (hi_v - lo_v)
        return torch.exp(vals[:, 0])
