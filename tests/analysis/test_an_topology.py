"""Morse–Smale segmentation and persistence on functions whose topology is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scidl.analysis.topology import (
    auto_threshold,
    describe_cell,
    morse_smale,
    neighbourhood_graph,
    persistence_pairs,
    simplify_labels,
    steepest_roots,
)


def _chain(n: int) -> np.ndarray:
    return np.stack([np.arange(n - 1), np.arange(1, n)], 1)


def test_1d_persistence_by_hand():
    # maxima at 1 (f=3) and 3 (f=2) separated by the saddle at 2 (f=1): persistence 2 - 1 = 1
    f = np.array([0.0, 3.0, 1.0, 2.0, 0.0])
    pairs = persistence_pairs(f, _chain(5), ascending=True)
    assert pairs == {3: (1, 1.0), 1: (1, float("inf"))}
    lows = persistence_pairs(f, _chain(5), ascending=False)
    assert lows[2] == (4, 1.0)  # min 2 (f=1) joins min 4 at f=2
    assert lows[0][1] == pytest.approx(3.0) or lows[4][1] == pytest.approx(3.0)


def test_1d_simplification_merges_the_small_bump():
    x = np.linspace(0, 1, 201)
    f = np.exp(-((x - 0.3) / 0.08) ** 2) + 0.3 * np.exp(-((x - 0.7) / 0.08) ** 2)
    ms = morse_smale(x, f, k=2, persistence=0.0)
    assert [round(x[m], 2) for m in ms.maxima] == [0.3, 0.7]
    assert ms.max_persistence[ms.maxima[1]] == pytest.approx(0.3, abs=0.01)
    ms = morse_smale(x, f, k=2, persistence=0.35, relative=False)
    assert [round(x[m], 2) for m in ms.maxima] == [0.3]


def test_2d_two_bumps_persistence_matches_height():
    g = np.linspace(0, 1, 41)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    f = np.exp(-np.sum((X - [0.25, 0.5]) ** 2, 1) / 0.01) + 0.6 * np.exp(
        -np.sum((X - [0.75, 0.5]) ** 2, 1) / 0.01
    )
    pairs = persistence_pairs(f, neighbourhood_graph(X, k=8), ascending=True)
    finite = sorted(p for _, p in pairs.values() if np.isfinite(p))
    assert finite == pytest.approx([0.6], abs=0.01)  # saddle value ~ 0.003 between the bumps


def test_steepest_roots_follow_the_steepest_edge():
    f = np.array([0.0, 3.0, 1.0, 2.0, 0.0, 5.0])
    roots = steepest_roots(np.arange(6.0), f, _chain(6), ascending=True)
    assert roots.tolist() == [1, 1, 1, 3, 5, 5]  # vertex 2: slope 2 towards 1 beats 1 towards 3
    lows = steepest_roots(np.arange(6.0), f, _chain(6), ascending=False)
    assert lows.tolist() == [0, 0, 2, 4, 4, 4]


def test_simplify_follows_chains():
    pairs = {0: (0, float("inf")), 1: (2, 0.1), 2: (0, 0.2), 3: (0, 5.0)}
    out = simplify_labels(np.array([0, 1, 2, 3]), pairs, threshold=0.5)
    assert out.tolist() == [0, 0, 0, 3]


def test_auto_threshold_largest_gap():
    assert auto_threshold([float("inf"), 0.9, 0.8, 0.05, 0.04]) == pytest.approx(0.425)


def _four_bumps(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    centres = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    heights = np.array([1.0, 0.8, 0.9, 0.7])
    f = sum(h * np.exp(-np.sum((X - c) ** 2, 1) / (2 * 0.08**2)) for h, c in zip(heights, centres, strict=True))
    return X, f + 0.05 * rng.standard_normal(n), centres


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("persistence", [0.1, None])
def test_four_planted_bumps_give_four_maxima(seed, persistence):
    X, f, centres = _four_bumps(seed)
    raw = morse_smale(X, f, k=10, persistence=0.0)
    assert len(raw.maxima) > 10  # the noise makes many spurious maxima
    ms = morse_smale(X, f, k=10, persistence=persistence)
    assert len(ms.maxima) == 4
    d = np.linalg.norm(X[ms.maxima][:, None] - centres[None], axis=2)
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2, 3]  # one maximum per bump
    assert d.min(1).max() < 0.1
    assert sum(c.size for c in ms.cells) == len(X)


def test_gabriel_graph_is_a_subgraph_and_keeps_four_maxima():
    X, f, _ = _four_bumps(0)
    knn = {tuple(e) for e in neighbourhood_graph(X, k=10).tolist()}
    gab = neighbourhood_graph(X, k=10, kind="gabriel")
    assert 0 < len(gab) < len(knn) and all(tuple(e) in knn for e in gab.tolist())
    # the sparser graph makes noise extrema more persistent; the largest-gap rule still works
    assert len(morse_smale(X, f, k=10, graph="gabriel", persistence=None).maxima) == 4


def test_worst_cell_names_the_high_error_region():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (1200, 2))
    err = 0.02 * rng.random(1200) + np.exp(-np.sum((X - [0.5, -0.5]) ** 2, 1) / 0.02)
    ms = morse_smale(X, err, k=10, persistence=0.1)
    w = ms.worst()
    assert w.lo[0] < 0.5 < w.hi[0] and w.lo[1] < -0.5 < w.hi[1]
    assert "x ∈" in describe_cell(w, ["x", "t"])


def test_cli_reads_npz_and_writes_cells(tmp_path, capsys):
    from scidl.cli import main

    X, f, _ = _four_bumps(0, n=800)
    np.savez(tmp_path / "s.npz", X=X, f=f, names=np.array(["a", "b"]))
    out = tmp_path / "cells.json"
    assert main(["topology", "--input", str(tmp_path / "s.npz"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 maxima" in text and "a ∈" in text
    import json

    cells = json.loads(out.read_text())["cells"]
    assert sum(c["size"] for c in cells) == 800
    assert main(["topology", "--input", str(tmp_path / "missing.npz")]) == 2
