"""Synthetic climate fields with tropical cyclones and atmospheric rivers (Kurth et al. 2018).

Each sample has three channels on a ``size x size`` grid (units: background std devs):

* **pressure** anomaly: smooth random field; a cyclone adds a Gaussian depression
  ``-A exp(-d^2 / 2r^2)``;
* **moisture** (TMQ-like): smooth field plus a meridional gradient and random moist
  blobs; a cyclone adds a cloud shield ``B sigmoid((r - d) / 0.6)``, a river a filament
  ``C sigmoid((w - s) / 0.5)`` with ``s`` the distance to the river's centre line (a
  quadratic Bezier curve), so labels follow the visible edges as heuristic labels do;
* **wind** speed: smooth field with random jets; a cyclone adds a Rankine vortex ring
  ``V(d) = V_m d / r_m`` (``d < r_m``), ``V_m (r_m / d)^0.6`` outside, ``r_m = r / 2``;
  a river adds a low-level jet ``D exp(-s^2 / 2(1.5w)^2)``.

Labels: 0 background, 1 cyclone (``d <= r``), 2 river (``s <= w``; cyclones win on overlap).
Heavy imbalance: a few per cent of pixels are events. Everything depends only on the seed.
"""

from __future__ import annotations

import math

import torch

CLASSES = ("background", "cyclone", "river")


def smooth_field(n: int, size: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """Unit-variance periodic Gaussian random fields ``[n, size, size]``, correlation length
    ``scale`` pixels (white noise low-passed in Fourier space)."""
    k = torch.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    filt = torch.exp(-2 * math.pi**2 * scale**2 * k2)
    f = torch.fft.ifft2(torch.fft.fft2(torch.randn(n, size, size, generator=g)) * filt).real
    return f / f.flatten(1).std(1)[:, None, None]


def _bezier_distance(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor,
                     yy: torch.Tensor, xx: torch.Tensor, n_pts: int = 48) -> torch.Tensor:
    """Distance of every pixel to a quadratic Bezier curve (sampled at ``n_pts`` points)."""
    t = torch.linspace(0, 1, n_pts)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # [n_pts, 2] (y, x)
    d2 = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    return d2.min(0).values.sqrt()


def make_weather(n: int, size: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """``n`` samples: fields ``[n, 3, size, size]`` (float) and labels ``[n, size, size]``
    (int64). ``noise`` is the std of white noise added to every channel."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    ax = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    pres = smooth_field(n, size, size / 6, g)
    moist = 0.6 * smooth_field(n, size, size / 8, g) + 1.5 * (1 - yy / size)
    blobs = smooth_field(n, size, size / 24, g)
    moist = moist + 1.5 * torch.relu(blobs - 1.2)  # convective moist blobs (distractors)
    wind = 0.7 * smooth_field(n, size, size / 10, g)
    jets = smooth_field(n, size, size / 20, g)
    wind = wind + 1.2 * torch.relu(jets - 1.0)  # jet streaks (distractors)
    label = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        river_mask = torch.zeros(size, size, dtype=torch.bool)
        for _ in range(int(r(1) < 0.75) + int(r(1) < 0.35)):  # 0-2 rivers
            p0 = torch.stack([size * (0.55 + 0.4 * r(1)), size * 0.5 * r(1)], -1)[0]
            length = size * (0.5 + 0.4 * r(1))
            ang = -math.pi / 2 + 0.8 * (r(1) - 0.2)  # heading poleward (up) and east
            p2 = p0 + length * torch.cat([torch.sin(ang), torch.cos(ang)])
            p1 = (p0 + p2) / 2 + size * 0.25 * (r(2) - 0.5)
            w = 1.5 + 1.5 * r(1)
            s = _bezier_distance(p0, p1, p2, yy, xx)
            moist[i] += (2.0 + r(1)) * torch.sigmoid((w - s) / 0.5)
            wind[i] += (1.0 + r(1)) * torch.exp(-(s**2) / (2 * (1.5 * w) ** 2))
            river_mask |= s <= w
        label[i][river_mask] = 2
        for _ in range(int(r(1) < 0.6) + int(r(1) < 0.25)):  # 0-2 cyclones
            cy, cx = size * (0.1 + 0.8 * r(1)), size * (0.1 + 0.8 * r(1))
            rad = size * (0.08 + 0.06 * r(1))
            d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
            bump = torch.exp(-(d**2) / (2 * rad**2))
            pres[i] -= (1.5 + 1.5 * r(1)) * bump
            moist[i] += (1.5 + r(1)) * torch.sigmoid((rad - d) / 0.6)  # cloud shield
            rm, vm = rad / 2, 2.0 + 1.5 * r(1)
            wind[i] += vm * torch.where(d < rm, d / rm, (rm / d.clamp_min(1e-3)) ** 0.6)
            label[i][d <= rad] = 1
    fields = torch.stack([pres, moist, wind], dim=1)
    fields = fields + noise * torch.randn(fields.shape, generator=g)
    return fields, label


def per_class_iou(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """IoU of each class over all pixels: ``|P_c & L_c| / |P_c | L_c|`` (NaN if both empty)."""
    out = torch.empty(n_classes, dtype=torch.float64)
    for c in range(n_classes):
        p, t = pred == c, label == c
        union = (p | t).sum().item()
        out[c] = (p & t).sum().item() / union if union else float("nan")
    return out


def threshold_segment(fields: torch.Tensor, th: tuple[float, ...]) -> torch.Tensor:
    """Heuristic (TECA-like): cyclone where pressure < th[0] and wind > th[1]; river where
    moisture > th[2] and wind > th[3] (and not cyclone); background elsewhere."""
    pres, moist, wind = fields[:, 0], fields[:, 1], fields[:, 2]
    out = torch.zeros(pres.shape, dtype=torch.int64)
    out[(moist > th[2]) & (wind > th[3])] = 2
    out[(pres < th[0]) & (wind > th[1])] = 1
    return out


def _iou_grid(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor,
              edges: torch.Tensor) -> torch.Tensor:
    """IoU of ``(a > edges[i]) & (b > edges[j])`` vs ``target`` for every (i, j), from
    2-D histograms and reverse cumulative sums (no pass over the pixels per threshold)."""
    nb = edges.numel()
    ia = torch.bucketize(score_a.flatten(), edges)  # number of edges below the value
    ib = torch.bucketize(score_b.flatten(), edges)
    t = target.flatten()
    hist = torch.zeros(2, nb + 1, nb + 1, dtype=torch.float64)
    hist.index_put_((t.long(), ia, ib), torch.ones(t.numel(), dtype=torch.float64),
                    accumulate=True)
    # count of pixels with a > edges[i] and b > edges[j]: sum over bins k > i, l > j
    above = hist.flip(1, 2).cumsum(1).cumsum(2).flip(1, 2)[:, 1:, 1:]
    tp, fp = above[1], above[0]
    fn = hist[1].sum() - tp
    return tp / (tp + fp + fn).clamp_min(1)


def tune_thresholds(fields: torch.Tensor, label: torch.Tensor) -> tuple[float, ...]:
    """Grid-search the heuristic's four thresholds (0.1 apart in [-5, 6]) for the best IoU
    of each class on ``(fields, label)``."""
    edges = torch.linspace(-5.0, 6.0, 111)
    pres, moist, wind = fields[:, 0], fields[:, 1], fields[:, 2]
    nb = edges.numel()
    i, j = divmod(int(_iou_grid(-pres, wind, label == 1, edges).argmax()), nb)
    k, m = divmod(int(_iou_grid(moist, wind, label == 2, edges).argmax()), nb)
    return -float(edges[i]), float(edges[j]), float(edges[k]), float(edges[m])
