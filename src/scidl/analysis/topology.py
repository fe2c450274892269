"""Topological model evaluation: a Morse–Smale segmentation of a scalar over scattered samples.

Following Gerber et al. (IEEE TVCG 2010, R package ``msr``) and Liu et al. (IEEE TVCG 2019),
the samples ``X`` (n × d, input space) become the vertices of a neighbourhood graph; a scalar
``f`` on them (typically a surrogate's absolute error) is followed along steepest-ascent and
steepest-descent edges,

    asc(i) = argmax_{j ∈ N(i), f_j > f_i} (f_j − f_i) / ‖x_j − x_i‖,

so every sample flows to one local maximum and one local minimum. The pair (maximum, minimum)
is its Morse–Smale cell. Noise creates spurious extrema; 0-dimensional persistence of the
superlevel (sublevel) sets ranks them: a maximum born at f(m) dies where its component merges
with that of a higher maximum at a saddle s, persistence = f(m) − f(s) (elder rule). Maxima
with persistence below a threshold are merged into the maximum that absorbed them, which
simplifies the segmentation. Per-cell summaries (size, input ranges, mean scalar) name the
region where a surrogate fails.

The reference implementation ``topopy`` (Maljovec; last release 2022, C++ extension ``nglpy``)
is unmaintained, so this module is written on numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "CellSummary",
    "MorseSmale",
    "auto_threshold",
    "describe_cell",
    "morse_smale",
    "neighbourhood_graph",
    "persistence_pairs",
    "plot_morse_smale",
    "simplify_labels",
    "steepest_roots",
]


def neighbourhood_graph(
    X: np.ndarray, k: int = 10, kind: Literal["knn", "gabriel"] = "knn", scale: bool = True
) -> np.ndarray:
    """Undirected edges ``(E, 2)`` (i < j) of a k-nearest-neighbour or relaxed Gabriel graph.

    ``gabriel`` keeps a kNN edge (i, j) only if no other kNN candidate of i or j lies inside
    the ball with diameter x_i x_j (the empty-region graph of topopy/nglpy with beta = 1).
    ``scale`` maps every input dimension to [0, 1] first, so units do not pick neighbours.
    """
    X = _scaled(np.asarray(X, dtype=float), scale)
    n = len(X)
    k = int(min(k, n - 1))
    if k < 1:
        return np.zeros((0, 2), dtype=np.int64)
    _, nbr = cKDTree(X).query(X, k=k + 1)
    nbr = nbr[:, 1:]
    src = np.repeat(np.arange(n), k)
    e = np.sort(np.stack([src, nbr.ravel()], 1), axis=1)
    e = np.unique(e[e[:, 0] != e[:, 1]], axis=0)
    if kind == "knn":
        return e
    if kind != "gabriel":
        raise ValueError(f"unknown graph kind {kind!r}; choices: knn, gabriel")
    cand = np.concatenate([nbr[e[:, 0]], nbr[e[:, 1]]], axis=1)  # (E, 2k)
    mid = 0.5 * (X[e[:, 0]] + X[e[:, 1]])
    r2 = 0.25 * np.sum((X[e[:, 0]] - X[e[:, 1]]) ** 2, axis=1)
    d2 = np.sum((X[cand] - mid[:, None, :]) ** 2, axis=2)
    inside = (d2 < r2[:, None] * (1 - 1e-12)) & (cand != e[:, :1]) & (cand != e[:, 1:])
    return e[~inside.any(axis=1)]


def _scaled(X: np.ndarray, scale: bool) -> np.ndarray:
    if X.ndim == 1:
        X = X[:, None]
    if not scale:
        return X
    lo, hi = X.min(0), X.max(0)
    return (X - lo) / np.where(hi > lo, hi - lo, 1.0)


def _order(f: np.ndarray) -> np.ndarray:
    """Rank of each value with ties broken by index (simulation of simplicity)."""
    rank = np.empty(len(f), dtype=np.int64)
    rank[np.lexsort((np.arange(len(f)), f))] = np.arange(len(f))
    return rank


def steepest_roots(
    X: np.ndarray, f: np.ndarray, edges: np.ndarray, ascending: bool = True, scale: bool = True
) -> np.ndarray:
    """The extremum each vertex reaches by steepest ascent (or descent) along graph edges."""
    Xs = _scaled(np.asarray(X, dtype=float), scale)
    g = np.asarray(f, dtype=float) if ascending else -np.asarray(f, dtype=float)
    rank = _order(g)
    n = len(g)
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    up = rank[j] > rank[i]
    i, j = i[up], j[up]
    dist = np.linalg.norm(Xs[j] - Xs[i], axis=1)
    slope = (g[j] - g[i]) / np.maximum(dist, 1e-300)
    ptr = np.arange(n)
    if len(i):
        o = np.lexsort((-slope, i))
        first = np.unique(i[o], return_index=True)[1]
        ptr[i[o][first]] = j[o][first]
    while True:  # pointer jumping: O(log n) rounds
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def persistence_pairs(
    f: np.ndarray, edges: np.ndarray, ascending: bool = True
) -> dict[int, tuple[int, float]]:
    """0-dim persistence of the superlevel (``ascending``) or sublevel sets over the graph.

    Returns ``{extremum: (absorbing extremum, persistence)}``; the global extremum of each
    connected component absorbs nothing and has persistence ``inf`` (absorber = itself).
    """
    g = np.asarray(f, dtype=float) if ascending else -np.asarray(f, dtype=float)
    n = len(g)
    rank = _order(g)
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    parent = np.full(n, -1, dtype=np.int64)  # union-find; -1: not yet added
    peak = np.arange(n)  # highest vertex of each component root

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    out: dict[int, tuple[int, float]] = {}
    for v in np.argsort(-rank, kind="stable"):
        v = int(v)
        parent[v] = v
        roots = {find(u) for u in adj[v] if parent[u] >= 0}
        if not roots:
            continue  # v is a local extremum: a new component is born
        roots_sorted = sorted(roots, key=lambda r: -rank[peak[r]])
        elder = roots_sorted[0]
        for r in roots_sorted[1:]:  # younger components die at saddle v
            out[int(peak[r])] = (int(peak[elder]), float(abs(g[peak[r]] - g[v])))
            parent[r] = elder
        parent[v] = elder
    for v in range(n):
        if parent[v] == v and int(peak[v]) not in out:
            out[int(peak[v])] = (int(peak[v]), float("inf"))
    return out


def auto_threshold(pers: Sequence[float]) -> float:
    """Threshold in the middle of the largest gap between sorted finite persistences.

    The largest gap includes the one between the smallest persistence and zero, so a
    field without noise keeps all its extrema.
    """
    p = np.sort(np.asarray([x for x in pers if np.isfinite(x)], dtype=float))[::-1]
    if len(p) == 0:
        return 0.0
    p = np.append(p, 0.0)
    gaps = p[:-1] - p[1:]
    i = int(np.argmax(gaps))
    return float(0.5 * (p[i] + p[i + 1]))


def simplify_labels(
    roots: np.ndarray, pairs: dict[int, tuple[int, float]], threshold: float
) -> np.ndarray:
    """Relabel vertices: extrema with persistence < threshold go to their absorber (chained)."""
    final: dict[int, int] = {}

    def resolve(m: int) -> int:
        seen = []
        while m not in final:
            absorber, p = pairs[m]
            if p >= threshold or absorber == m:
                final[m] = m
                break
            seen.append(m)
            m = absorber
        for s in seen:
            final[s] = final[m]
        return final[m]

    uniq = np.unique(roots)
    lut = {int(r): resolve(int(r)) for r in uniq}
    return np.array([lut[int(r)] for r in roots], dtype=np.int64)


@dataclass
class CellSummary:
    """One Morse–Smale cell: the samples flowing to ``maximum`` and ``minimum``.

    ``lo``/``hi`` are the input-space ranges of its samples; ``mean``/``max`` of the scalar.
    ``hot`` counts its samples above the global ``hot_quantile`` of the scalar, ``hot_lo``/
    ``hot_hi`` bound them (the failing sub-region; equal to lo/hi when none), and
    ``excess`` = Σ max(f − f_q, 0) over the cell weighs how much badness it holds.
    """

    cell: int
    maximum: int
    minimum: int
    size: int
    lo: list[float]
    hi: list[float]
    mean: float
    max: float
    centroid: list[float]
    hot: int = 0
    hot_lo: list[float] = field(default_factory=list)
    hot_hi: list[float] = field(default_factory=list)
    excess: float = 0.0


@dataclass
class MorseSmale:
    """Result of :func:`morse_smale` (vertex indices refer to rows of ``X``)."""

    edges: np.ndarray
    max_label: np.ndarray
    min_label: np.ndarray
    cell: np.ndarray
    maxima: list[int]
    minima: list[int]
    max_persistence: dict[int, float]
    min_persistence: dict[int, float]
    threshold_max: float
    threshold_min: float
    cells: list[CellSummary] = field(default_factory=list)

    def worst(self, by: Literal["excess", "mean"] = "excess") -> CellSummary:
        """The cell holding the most excess over the hot quantile (or the largest mean)."""
        if by == "mean":
            return max(self.cells, key=lambda c: c.mean)
        return max(self.cells, key=lambda c: (c.excess, c.mean))


def morse_smale(
    X: np.ndarray,
    f: np.ndarray,
    k: int = 10,
    graph: Literal["knn", "gabriel"] = "knn",
    persistence: float | None = None,
    relative: bool = True,
    scale: bool = True,
    hot_quantile: float = 0.95,
) -> MorseSmale:
    """Morse–Smale segmentation of ``f`` over samples ``X`` with persistence simplification.

    Args:
        X: (n, d) sample locations (or (n,) for 1-D).
        f: (n,) scalar values.
        k: neighbours per sample in the graph.
        graph: ``knn`` or ``gabriel`` (empty-region pruning of the kNN graph).
        persistence: simplification threshold; ``None`` picks it at the largest gap of the
            persistence diagram (separately for maxima and minima).
        relative: the threshold is a fraction of ``max(f) − min(f)``.
        scale: map every input dimension to [0, 1] before building the graph.
        hot_quantile: samples above this quantile of ``f`` are "hot" (see CellSummary).
    """
    X = np.asarray(X, dtype=float)
    X2 = X[:, None] if X.ndim == 1 else X
    f = np.asarray(f, dtype=float).ravel()
    if len(f) != len(X2):
        raise ValueError(f"X has {len(X2)} samples but f has {len(f)} values")
    edges = neighbourhood_graph(X2, k=k, kind=graph, scale=scale)
    rng_f = float(f.max() - f.min()) or 1.0
    out = {}
    for asc in (True, False):
        roots = steepest_roots(X2, f, edges, ascending=asc, scale=scale)
        pairs = persistence_pairs(f, edges, ascending=asc)
        if persistence is None:
            thr = auto_threshold([p for _, p in pairs.values()])
        else:
            thr = persistence * rng_f if relative else persistence
        labels = simplify_labels(roots, pairs, thr)
        out[asc] = (labels, {m: p for m, (_, p) in pairs.items()}, thr)
    max_label, max_pers, thr_max = out[True]
    min_label, min_pers, thr_min = out[False]
    keys = max_label.astype(np.int64) * len(f) + min_label
    _, cell = np.unique(keys, return_inverse=True)
    ms = MorseSmale(
        edges=edges,
        max_label=max_label,
        min_label=min_label,
        cell=cell.ravel(),
        maxima=sorted(int(m) for m in np.unique(max_label)),
        minima=sorted(int(m) for m in np.unique(min_label)),
        max_persistence=max_pers,
        min_persistence=min_pers,
        threshold_max=thr_max,
        threshold_min=thr_min,
    )
    ms.cells = _summaries(X2, f, ms, float(np.quantile(f, hot_quantile)))
    return ms


def _summaries(X: np.ndarray, f: np.ndarray, ms: MorseSmale, fq: float) -> list[CellSummary]:
    out = []
    for c in range(int(ms.cell.max()) + 1):
        idx = np.flatnonzero(ms.cell == c)
        xs = X[idx]
        hot = xs[f[idx] > fq]
        hx = hot if len(hot) else xs
        out.append(
            CellSummary(
                cell=c,
                maximum=int(ms.max_label[idx[0]]),
                minimum=int(ms.min_label[idx[0]]),
                size=len(idx),
                lo=xs.min(0).tolist(),
                hi=xs.max(0).tolist(),
                mean=float(f[idx].mean()),
                max=float(f[idx].max()),
                centroid=xs.mean(0).tolist(),
                hot=len(hot),
                hot_lo=hx.min(0).tolist(),
                hot_hi=hx.max(0).tolist(),
                excess=float(np.maximum(f[idx] - fq, 0.0).sum()),
            )
        )
    return out


def describe_cell(c: CellSummary, names: Sequence[str] | None = None) -> str:
    """Human-readable region, e.g. ``x ∈ [-0.21, 0.18], t ∈ [0.62, 1.00] (n=143, mean=0.31,
    hot: x ∈ [...], t ∈ [...])``: the cell's ranges, then those of its hot samples."""
    names = list(names) if names else [f"x{i}" for i in range(len(c.lo))]

    def box(lo: list[float], hi: list[float]) -> str:
        return ", ".join(f"{n} ∈ [{a:.2f}, {b:.2f}]" for n, a, b in zip(names, lo, hi, strict=False))

    text = f"{box(c.lo, c.hi)} (n={c.size}, mean={c.mean:.4g}, max={c.max:.4g}"
    if c.hot:
        text += f"; {c.hot} hot samples in {box(c.hot_lo, c.hot_hi)}"
    return text + ")"


def plot_morse_smale(
    X: np.ndarray,
    f: np.ndarray,
    ms: MorseSmale,
    path: str | Path,
    names: Sequence[str] = ("x0", "x1"),
    title: str = "",
    scalar: str = "scalar",
    caption: str | None = None,
) -> Path:
    """Two panels over the first two input dimensions: the scalar, and the cells (worst boxed).

    ``scalar`` names the colour scale (e.g. ``|error|``); ``caption`` is the footer line
    (default: this machine, torch and SciDL versions, date).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from scidl.runtime.plotting import caption_text, finish

    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    y = X[:, 1] if X.shape[1] > 1 else np.asarray(f)
    fig = Figure(figsize=(10, 4.2))
    ax = fig.subplots(1, 2)
    sc = ax[0].scatter(X[:, 0], y, c=f, s=8, cmap="viridis")
    fig.colorbar(sc, ax=ax[0], label=scalar)
    ax[1].scatter(X[:, 0], y, c=ms.cell, s=8, cmap="tab20")
    for a in ax:
        a.scatter(X[ms.maxima, 0], y[ms.maxima], marker="^", c="red", s=60, label="maxima")
        a.scatter(X[ms.minima, 0], y[ms.minima], marker="v", c="blue", s=40, label="minima")
        a.set_xlabel(names[0])
        a.set_ylabel(names[1] if X.shape[1] > 1 else scalar)
    w = ms.worst()
    if X.shape[1] > 1:
        ax[1].add_patch(
            Rectangle(
                (w.hot_lo[0], w.hot_lo[1]), w.hot_hi[0] - w.hot_lo[0], w.hot_hi[1] - w.hot_lo[1],
                fill=False, ec="red", lw=2, label="hot samples of the worst cell",
            )
        )
    ax[0].set_title(title or f"{scalar} over {len(X)} samples")
    ax[1].set_title(f"{len(ms.cells)} Morse–Smale cells ({len(ms.maxima)} max, {len(ms.minima)} min)")
    ax[1].legend(loc="lower left", fontsize=7)
    return finish(fig, Path(path), caption_text(None) if caption is None else caption)
