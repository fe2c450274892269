"""Look at SciDL's report pages in a real browser (headless Chromium) and check the docs' images.

    python scripts/docs_check.py                 # sample train/scale/predict reports
    python scripts/docs_check.py RUN_DIR ...     # the reports of these run folders
    python scripts/docs_check.py --out DIR       # keep the screenshots in DIR

For each page ``report.html`` is (re)generated with ``scidl report``, opened in headless
Chromium and saved as a screenshot; the check fails when the browser shows nothing, when
an embedded picture does not decode (its box stays empty) or, for a training report, when
the headline and the curves are not the first thing on the page. It also fails when a
Markdown page (README.md, docs/**/*.md) links an image that does not exist.

Needs a Chromium (``chromium``, ``chromium-browser``, ``google-chrome`` on PATH, or the
``SCIDL_CHROMIUM`` variable); exits 2 with one line saying so when there is none.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
HEADLINE_RGB = (0x3B, 0x75, 0xAF)  # the headline box's left border (scaling/report.py _STYLE)


def find_browser() -> str | None:
    """Path of a Chromium-family browser, or None."""
    env = os.environ.get("SCIDL_CHROMIUM")
    if env:
        return env if Path(env).is_file() or shutil.which(env) else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(browser: str, page: Path, out: Path, width: int = 1200, height: int = 1600,
               timeout: float = 90.0) -> Path:
    """Render ``page`` in headless Chromium and save a PNG of the first ``height`` pixels."""
    with tempfile.TemporaryDirectory(prefix="scidl-chromium-") as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={out}",
               page.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot of {page}: {proc.stderr.strip()[-300:]}")
    return out


def _rgb(png: Path):  # -> numpy array (H, W, 3)
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def page_problems(shot: Path, kind: str) -> list[str]:
    """What looks wrong in a screenshot: blank page, no picture, headline not at the top."""
    import numpy as np

    px = _rgb(shot).astype(int)
    problems = []
    ink = (px.min(axis=2) < 200).mean()
    if ink < 0.005:
        problems.append(f"almost blank ({ink:.1%} of the pixels are not white)")
    # plot lines and bars are saturated colours (matplotlib's C0..C3); text is grey
    sat = px.max(axis=2) - px.min(axis=2) > 80
    rows_with_colour = np.flatnonzero(sat.sum(axis=1) > 3)
    if rows_with_colour.size == 0:
        problems.append("no coloured plot visible: an embedded picture did not render")
    if kind == "train":
        border = (np.abs(px - np.array(HEADLINE_RGB)).sum(axis=2) < 12).sum(axis=1) > 0
        head_rows = np.flatnonzero(border)
        if head_rows.size == 0 or head_rows[0] > 300:
            problems.append("the headline box is not at the top of the page")
        elif rows_with_colour.size and not (rows_with_colour > head_rows[-1]).any():
            problems.append("no curves below the headline")
        elif rows_with_colour.size and rows_with_colour[rows_with_colour > head_rows[-1]][0] > 900:
            problems.append("the curves do not follow the headline within the first screen")
    return problems


def sample_runs(base: Path) -> list[Path]:
    """Small train, scale and predict run folders (synthetic numbers; nothing is trained)."""
    from scidl.cli import main

    train = base / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "loss": 0.5 / (1 + s / 40), "lr": 3e-3} for s in range(10, 310, 10)]
    rows += [{"step": s, "eval/rel_l2": a, "eval/max_abs_err": m}
             for s, a, m in [(100, 0.2, 3.0), (200, 0.034, 1.1), (300, 0.054, 1.9)]]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (train / "summary.json").write_text(json.dumps(
        {"workload": "burgers", "headline": "rel_l2", "higher_is_better": False, "steps": 300,
         "world_size": 2, "backend": "gloo", "device": "cpu", "wall_s": 42.0,
         "step_time_s": 0.0042, "final_loss": 0.033}, indent=2))
    (train / "config.yaml").write_text("workload: burgers\noptim:\n  name: adam\n  lr: 0.003\n")
    scale = base / "scale"
    scale.mkdir(exist_ok=True)
    pts = [{"ranks": p, "repeats": 3, "global_batch": 64 * p, "step_s": s, "step_s_min": 0.9 * s,
            "step_s_max": 1.2 * s, "compute_s": 0.004, "comm_s": s - 0.003,
            "exposed_comm_s": s - 0.004, "samples_per_s": 64 * p / s,
            "efficiency": 0.0045 / s} for p, s in [(1, 0.0045), (2, 0.0052), (4, 0.0068)]]
    (scale / "scaling.json").write_text(json.dumps(
        {"workload": "digits", "mode": "weak", "comm": "dense", "points": pts}))
    prof = base / "profile.yaml"
    prof.write_text("compute_s: 0.3\ngrad_bytes: 100000000\nsamples_per_step: 64\n")
    predict = base / "predict"
    with contextlib.redirect_stdout(io.StringIO()):  # its table: not wanted here
        rc = main(["predict", "--profile", str(prof), "--hardware", "summit", "--ranks", "1,6,...,27600",
                   "--comm", "dense,fp16", "--out", str(predict)])
    if rc != 0:
        raise RuntimeError(f"scidl predict exited {rc}")
    return [train, scale, predict]


def kind_of(run_dir: Path) -> str:
    if (run_dir / "scaling.json").is_file():
        return "scale"
    if (run_dir / "prediction.json").is_file():
        return "predict"
    return "train"


def check_reports(browser: str, run_dirs: list[Path], out: Path) -> dict[Path, list[str]]:
    """Render each run's report, screenshot it into ``out``; problems per screenshot."""
    from scidl.scaling.report import render_run

    out.mkdir(parents=True, exist_ok=True)
    found = {}
    for i, d in enumerate(run_dirs):
        page = render_run(d)
        kind = kind_of(d)
        shot = screenshot(browser, page, out / f"{i:02d}_{kind}_{d.name}.png")
        found[shot] = page_problems(shot, kind)
    return found


IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)|<img[^>]+src=\"([^\"]+)\"")


def missing_images(root: Path = ROOT) -> list[str]:
    """``page: link`` for each image a Markdown page links that is not in the repository."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    bad = []
    for page in pages:
        for m in IMAGE_LINK.finditer(page.read_text()):
            link = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", link):
                continue  # a URL
            if not (page.parent / link.split("#")[0]).is_file():
                bad.append(f"{page.relative_to(root)}: {link}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dirs", nargs="*", type=Path, help="run folders (default: samples)")
    ap.add_argument("--out", type=Path, help="folder for the screenshots (default: a temp folder)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    bad = missing_images()
    for b in bad:
        print(f"missing image: {b}")
    browser = find_browser()
    if browser is None:
        print("docs-check: no headless Chromium found (install chromium, or set SCIDL_CHROMIUM)")
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="scidl-docs-check-"))
    runs = args.run_dirs or sample_runs(out / "samples")
    results = check_reports(browser, runs, out)
    for shot, problems in results.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {shot}" + "".join(f"\n     {p}" for p in problems))
    failed = bad or any(results.values())
    print(f"{len(results)} report page(s) checked in {browser}; screenshots in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
