"""Report pages checked in a real browser: headless Chromium screenshots (scripts/docs_check.py).

Skips with one line when no Chromium is installed. The checks: the page is not blank, its
pictures render, and a training report opens with the headline box followed by the curves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("docs_check", ROOT / "scripts" / "docs_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_check", mod)
    spec.loader.exec_module(mod)
    return mod


dc = _load()


def test_markdown_pages_link_existing_images():
    assert dc.missing_images(ROOT) == []


def test_report_pages_render_in_chromium(tmp_path):
    browser = dc.find_browser()
    if browser is None:
        pytest.skip("no headless Chromium (install chromium or set SCIDL_CHROMIUM)")
    runs = dc.sample_runs(tmp_path / "samples")
    results = dc.check_reports(browser, runs, tmp_path / "shots")
    assert len(results) == 3
    for shot, problems in results.items():
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert problems == [], f"{shot.name}: {problems}"


def test_the_check_sees_a_page_without_headline(tmp_path):
    """A report that opens with a JSON dump (the old layout) fails the train-page check."""
    browser = dc.find_browser()
    if browser is None:
        pytest.skip("no headless Chromium (install chromium or set SCIDL_CHROMIUM)")
    page = tmp_path / "old.html"
    page.write_text("<html><body><h1>scidl run</h1><pre>" + '{"steps": 300}\n' * 80
                    + "</pre></body></html>")
    shot = dc.screenshot(browser, page, tmp_path / "old.png")
    problems = dc.page_problems(shot, "train")
    assert any("headline" in p for p in problems)
    assert any("no coloured plot" in p for p in problems)
