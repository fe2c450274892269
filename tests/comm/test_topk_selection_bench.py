"""benchmarks/topk_selection.py: the threshold path sends exactly k entries per call, and
the docs sentence quotes the results file."""

from __future__ import annotations

import pytest

from scidl.testing import load_repo_script


def _bench():
    return load_repo_script("benchmarks/topk_selection.py")


def test_threshold_selection_sends_exactly_the_density():
    rows = _bench().measure(200_000, [0.01], rounds=3)
    (r,) = rows
    assert r["k"] == 2000
    assert r["sent_fraction"] == r["sent_fraction_min"] == pytest.approx(0.01)
    assert r["exact_s"] > 0 and r["threshold_s"] > 0
    assert 0.005 < r["quantile_only_fraction"] < 0.02  # the old rule: about the density


def test_markdown_quotes_the_results():
    d = {"numel": 6_500_000, "rounds": 9, "load_before": 0.4, "date": "2026-12-03",
         "rows": [{"density": 0.01, "k": 65000, "exact_s": 0.104, "threshold_s": 0.015,
                   "speedup": 6.9, "sent_fraction": 0.01, "sent_fraction_min": 0.01,
                   "quantile_only_fraction": 0.01012, "quantile_only_below_density": 1 / 3}]}
    text = _bench().markdown(d)
    assert "6.5 M" in text and "0.104 s" in text and "6.9× faster" in text
    assert "1.012 %" in text and "33 %" in text
