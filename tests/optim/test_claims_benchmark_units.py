"""The pure parts of benchmarks/claims.py: label flipping, the utilisation decomposition,
the resumable store, and the rendered tables quoting the numbers of their JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scidl.testing import load_repo_script

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    return load_repo_script("benchmarks/claims.py")


def test_flip_labels_moves_exactly_the_fraction_to_other_classes():
    b = _bench()
    y = torch.arange(200) % 10
    out, idx = b.flip_labels(y, 0.1, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    changed = (out != y).nonzero().flatten()
    assert sorted(changed.tolist()) == sorted(idx.tolist())
    assert out.min() >= 0 and out.max() <= 9
    again, _ = b.flip_labels(y, 0.1, seed=3)
    assert torch.equal(out, again)


def test_decompose_shares_add_up_and_find_the_tail():
    b = _bench()
    # worker a: [0, 4] gap 1 [5, 9]; worker b: [0.5, 4.5] then idle to 9 (tail 4.5, head 0.5)
    spans = [("a", 0.0, 4.0), ("a", 5.0, 9.0), ("b", 0.5, 4.5)]
    d = b.decompose(spans, workers=2)
    total = 2 * 9.0
    assert d["utilisation"] == pytest.approx(12.0 / total)
    assert d["gap"] == pytest.approx(1.0 / total)
    assert d["head"] == pytest.approx(0.5 / total)
    assert d["tail"] == pytest.approx(4.5 / total)
    assert d["utilisation"] + d["gap"] + d["head"] + d["tail"] == pytest.approx(1.0)
    assert d["mean_gap_s"] == pytest.approx(1.0)


def test_store_merges_runs_and_tables_quote_them(tmp_path):
    b = _bench()
    path = tmp_path / "claims.json"
    b.store("filtering", None, {"regimes": {"r": {"label_noise": 0.0, "overrides": []}},
                                "modes": ["none", "hard"], "fraction": 0.1}, path)
    for seed, (a0, a1) in enumerate([(0.90, 0.92), (0.91, 0.90)]):
        b.store("filtering", f"r|none|{seed}", {"seed": seed, "final_eval": {"accuracy": a0}}, path)
        b.store("filtering", f"r|hard|{seed}", {"seed": seed, "final_eval": {"accuracy": a1}}, path)
    d = b.load_results(path)["filtering"]
    assert len(d["runs"]) == 4
    text = b.filtering_table(d)
    assert "0.9050 [0.9000–0.9100]" in text  # none: mean [min–max]
    assert "0.50 [-1.00–2.00]" in text  # hard − none per seed, in points
