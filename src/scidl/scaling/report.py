"""Plots and a self-contained HTML report for train, scale and predict run folders.

``render_run(run_dir)`` looks at what the folder holds — ``scaling.json`` (``scidl
scale``), ``prediction.json`` (``scidl predict``) or ``metrics.jsonl`` (``scidl train``)
— writes PNG plots next to it and a ``report.html`` with the images embedded (base64),
so the file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text, save_figure


def new_figure(figsize: tuple[float, float] = (6, 4)) -> Any:
    """A ``matplotlib.figure.Figure`` of its own: no pyplot, no backend switch, no global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- plots


def _xaxis(ax: Any, series: Mapping[str, Sequence[dict[str, Any]]], logx: bool) -> None:
    if logx:
        ax.set_xscale("log")
    else:
        ax.set_xticks(sorted({p["ranks"] for pts in series.values() for p in pts}))


def plot_efficiency(series: Mapping[str, Sequence[dict[str, Any]]], path: Path, logx: bool) -> Path:
    """Efficiency E(p) of each named series of points (``ranks``, ``efficiency``)."""
    fig = new_figure()
    ax = fig.subplots()
    for name, pts in series.items():
        ax.plot([p["ranks"] for p in pts], [p["efficiency"] for p in pts], "o-", label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    _xaxis(ax, series, logx)
    ax.set_xlabel("processes p")
    ax.set_ylabel("efficiency E(p)")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_throughput(series: Mapping[str, Sequence[dict[str, Any]]], path: Path, logx: bool) -> Path:
    """Samples/s vs p with the ideal line from p = 1 (weak) for the first series."""
    fig = new_figure()
    ax = fig.subplots()
    for name, pts in series.items():
        ranks = [p["ranks"] for p in pts]
        ax.plot(ranks, [p["samples_per_s"] for p in pts], "o-", label=name)
    first = next(iter(series.values()))
    if first and first[0]["ranks"] == 1:
        r = [p["ranks"] for p in first]
        ax.plot(r, [first[0]["samples_per_s"] * x for x in r], ":", color="grey", label="ideal")
    _xaxis(ax, series, logx)
    if logx:
        ax.set_yscale("log")
    ax.set_xlabel("processes p")
    ax.set_ylabel("samples / s")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_breakdown(pts: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Stacked step time per p: compute, hidden (overlapped) comm, exposed comm."""
    fig = new_figure()
    ax = fig.subplots()
    labels = [str(p["ranks"]) for p in pts]
    comp = [p.get("compute_s", 0.0) or 0.0 for p in pts]
    exp_ = [p.get("exposed_comm_s", 0.0) or 0.0 for p in pts]
    hidden = [max(0.0, (p.get("comm_s", 0.0) or 0.0) - e) for p, e in zip(pts, exp_, strict=True)]
    x = range(len(pts))
    ax.bar(x, comp, label="compute")
    ax.bar(x, exp_, bottom=comp, label="exposed comm")
    ax.bar(x, hidden, bottom=[c + e for c, e in zip(comp, exp_, strict=True)], alpha=0.35,
           label="overlapped comm (hidden)")
    ax.set_xticks(list(x), labels, rotation=45 if len(labels) > 8 else 0)
    ax.set_xlabel("processes p")
    ax.set_ylabel("seconds per step")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_train_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss per step, and every ``eval/*`` metric on a second panel."""
    evals = sorted({k for r in rows for k in r if k.startswith("eval/")})
    fig = new_figure((10 if evals else 6, 4))
    axes = fig.subplots(1, 2 if evals else 1)
    axes = list(axes) if evals else [axes]
    train = [r for r in rows if "loss" in r and r.get("loss") is not None]
    if train:
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
        if all(r["loss"] > 0 for r in train):
            axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].grid(alpha=0.3)
    for k in evals:
        pts = [r for r in rows if k in r and r[k] is not None]
        axes[1].plot([r["step"] for r in pts], [r[k] for r in pts], "o-", label=k[5:])
    if evals:
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("evaluation")
        axes[1].legend(fontsize=8)
        axes[1].grid(alpha=0.3)
    return _save(fig, path)


# ----------------------------------------------------------------------------- html


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def html_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(
    path: Path, title: str, sections: Sequence[tuple[str, str]], images: Sequence[Path]
) -> Path:
    """A self-contained HTML page: sections of (heading, html) and embedded PNGs."""
    imgs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"'
        f' alt="{html.escape(p.name)}"><figcaption>{html.escape(p.name)}</figcaption></figure>'
        for p in images
    )
    secs = "".join(f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 7px;text-align:right}figure{display:inline-block;margin:6px}"
        "img{max-width:520px}pre{background:#f4f4f4;padding:8px;font-size:12px}"
    )
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{secs}"
        f"<h2>Plots</h2>{imgs}</body></html>"
    )
    atomic_write_text(path, doc)
    return path


# ----------------------------------------------------------------------------- runs

SCALE_COLS = ["ranks", "global_batch", "samples_per_s", "step_s", "step_s_min", "step_s_max",
              "compute_s", "comm_s", "exposed_comm_s", "efficiency", "predicted_step_s",
              "predicted_efficiency", "step_error"]
PRED_COLS = ["ranks", "compute_s", "comm_s", "exposed_comm_s", "step_s", "samples_per_s",
             "efficiency"]


def render_scale(run_dir: Path) -> Path:
    data = json.loads((run_dir / "scaling.json").read_text())
    pts = data["points"]
    series = {"measured": pts}
    if all("predicted_efficiency" in p for p in pts):
        series["predicted"] = [
            {"ranks": p["ranks"], "efficiency": p["predicted_efficiency"],
             "samples_per_s": p.get("predicted_samples_per_s", math.nan)} for p in pts
        ]
    imgs = [
        plot_efficiency(series, run_dir / "scaling_efficiency.png", logx=False),
        plot_throughput(series, run_dir / "scaling_throughput.png", logx=False),
        plot_breakdown(pts, run_dir / "scaling_breakdown.png",
                       f"{data.get('workload', '')} ({data.get('mode', '')} scaling)"),
    ]
    meta = {k: v for k, v in data.items() if k != "points"}
    sections = [
        ("Measurements", html_table(pts, [c for c in SCALE_COLS if any(c in p for p in pts)])),
        ("Settings", f"<pre>{html.escape(json.dumps(meta, indent=2))}</pre>"),
    ]
    title = f"scidl scale: {data.get('workload', '')} ({data.get('mode', '')})"
    return write_html(run_dir / "report.html", title, sections, imgs)


def render_predict(run_dir: Path) -> Path:
    data = json.loads((run_dir / "prediction.json").read_text())
    curves: dict[str, list[dict[str, Any]]] = data["curves"]
    logx = max(p["ranks"] for c in curves.values() for p in c) > 64
    imgs = [
        plot_efficiency(curves, run_dir / "predict_efficiency.png", logx=logx),
        plot_throughput(curves, run_dir / "predict_throughput.png", logx=logx),
    ]
    first_name, first = next(iter(curves.items()))
    imgs.append(plot_breakdown(first, run_dir / "predict_breakdown.png", first_name))
    sections = [(name, html_table(c, PRED_COLS)) for name, c in curves.items()]
    meta = {k: v for k, v in data.items() if k != "curves"}
    sections.append(("Inputs", f"<pre>{html.escape(json.dumps(meta, indent=2))}</pre>"))
    return write_html(run_dir / "report.html", f"scidl predict: {data.get('hardware', '')}",
                      sections, imgs)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return rows


def render_train(run_dir: Path) -> Path:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    imgs = [plot_train_curves(rows, run_dir / "train_curves.png")]
    sections = []
    summ = run_dir / "summary.json"
    if summ.is_file():
        sections.append(("Summary", f"<pre>{html.escape(summ.read_text())}</pre>"))
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        cols = ["step"] + sorted({k for r in evals for k in r if k.startswith("eval/")})
        sections.append(("Evaluations", html_table(evals, cols)))
    return write_html(run_dir / "report.html", f"scidl run: {run_dir.name}", sections, imgs)


def render_run(run_dir: str | Path) -> Path:
    """Regenerate the plots and ``report.html`` of a train, scale or predict run folder."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"run folder not found: {d}")
    if (d / "scaling.json").is_file():
        return render_scale(d)
    if (d / "prediction.json").is_file():
        return render_predict(d)
    if (d / "metrics.jsonl").is_file():
        return render_train(d)
    raise FileNotFoundError(
        f"{d} holds none of scaling.json, prediction.json, metrics.jsonl: not a run folder"
    )
