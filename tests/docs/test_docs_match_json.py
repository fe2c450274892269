"""Every results table in docs/ is rendered from benchmarks/results/*.json.

Fails when a generated block differs from what its JSON renders to (a hand edit, or a
results file regenerated without `python scripts/render_docs.py`), when a page uses a key
the registry lacks, and when a table with numbers sits outside a generated block without
a ``<!-- static-table: why -->`` line above it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_docs", mod)
    spec.loader.exec_module(mod)
    return mod


rd = _load_renderer()
PAGES = rd.doc_pages(ROOT)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_blocks_match_json(page: Path) -> None:
    text = page.read_text()
    new, changed = rd.render_page(text, ROOT, {})
    assert not changed, f"{page.relative_to(ROOT)}: blocks {changed} differ from their JSON; run python scripts/render_docs.py"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_hand_typed_results_tables(page: Path) -> None:
    bad = rd.find_unmarked_tables(page.read_text())
    assert not bad, (f"{page.relative_to(ROOT)}: tables with numbers outside generated blocks at lines {bad}; "
                     "generate them from benchmarks/results/*.json or mark a reference table with "
                     "<!-- static-table: why -->")


def test_every_registry_key_is_used_and_its_json_exists() -> None:
    used = {k for p in PAGES for k, _ in rd.split_blocks(p.read_text()) if k}
    assert set(rd.REGISTRY) <= used, f"registry keys used in no page: {sorted(set(rd.REGISTRY) - used)}"
    for key, block in rd.REGISTRY.items():
        assert (ROOT / block.json_file).is_file(), f"{key}: {block.json_file} missing"


def test_hand_edit_is_detected() -> None:
    """A number changed inside a block is reported (the drift seen in communication.md)."""
    page = ROOT / "docs" / "communication.md"
    text = page.read_text()
    edited = text.replace("| digits | topk_1%_ef | accuracy = ", "| digits | topk_1%_ef | accuracy = 9", 1)
    assert edited != text
    _, changed = rd.render_page(edited, ROOT, {})
    assert changed


def test_rendering_follows_the_json(tmp_path: Path) -> None:
    """Corrected JSON renders corrected numbers: throughput = global batch / step time."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    d = json.loads((ROOT / "benchmarks/results/hybrid.json").read_text())
    for r in d["results"]:
        r["samples_per_s"] = 1e9  # a wrong stored throughput must not leak into the docs
    (tmp_path / "benchmarks/results/hybrid.json").write_text(json.dumps(d))
    out = rd.render_key("hybrid", tmp_path, {})
    assert "1000000000" not in out.replace(",", "")
    base = next(r for r in d["results"] if not r["pipeline"])
    assert f"{d['config']['batch'] / base['step_time_s']:.1f}" in out


def test_unmarked_table_and_bad_markers_are_caught() -> None:
    page = "text\n\n| a | b |\n|---|---|\n| x | 0.85 |\n"
    assert rd.find_unmarked_tables(page) == [3]
    marked = page.replace("\n\n|", "\n\n<!-- static-table: config -->\n|", 1)
    assert rd.find_unmarked_tables(marked) == []
    with pytest.raises(ValueError):
        rd.split_blocks("<!-- generated:a -->\nx\n")
    with pytest.raises(ValueError):
        rd.split_blocks("<!-- generated:a -->\n<!-- /generated:b -->\n")


def test_multi_seed_mean_and_spread() -> None:
    t = rd.t
    assert t.mean_spread([21, 8, 17], 1) == "15.3 [8–21]"
    assert t.mean_spread([34, None, None], 1) == "34.0 (1 of 3)"


def test_no_project_organisation_words_in_user_docs() -> None:
    pat = re.compile(r"the issue|this task|this session|the spec\b|issue [0-9]", re.I)
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in [*PAGES, ROOT / "README.md"]
            for i, line in enumerate(p.read_text().split("\n"), 1) if pat.search(line)]
    assert not hits, hits
