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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text
from scidl.runtime.plotting import (
    caption_text,
    finish,
    format_si,
    integer_ticks,
    new_figure,
    si_scale,
)

Series = Mapping[str, Sequence[dict[str, Any]]]


# ----------------------------------------------------------------------------- plots


def _xaxis(ax: Any, series: Series, logx: bool) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xlabel("processes p")
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    ranks = sorted({p["ranks"] for pts in series.values() for p in pts})
    if len(ranks) <= 12:
        ax.set_xticks(ranks)
    else:
        integer_ticks(ax.xaxis)


def spread(p: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """``(low, high)`` of a point's ``key`` over its repeats, or None without repeats.

    ``samples_per_s`` and ``efficiency`` are proportional to 1 / step time, so their
    range follows from the fastest and slowest repeat (``step_s_min``/``step_s_max``).
    """
    if int(p.get("repeats") or 1) < 2 or key not in p:
        return None
    lo_s, hi_s, step = p.get("step_s_min"), p.get("step_s_max"), p.get("step_s")
    if not (lo_s and hi_s and step):
        return None
    if key == "step_s":
        return float(lo_s), float(hi_s)
    v = float(p[key])
    return v * step / hi_s, v * step / lo_s


def _plot_series(ax: Any, name: str, pts: Sequence[dict[str, Any]], key: str) -> None:
    xs, ys = [p["ranks"] for p in pts], [p[key] for p in pts]
    spans = [spread(p, key) for p in pts]
    if any(spans):
        err = [[y - s[0] if s else 0.0 for y, s in zip(ys, spans, strict=True)],
               [s[1] - y if s else 0.0 for y, s in zip(ys, spans, strict=True)]]
        reps = max(int(p.get("repeats") or 1) for p in pts)
        ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3,
                    label=f"{name} (median; bars: min–max of {reps} repeats)")
    else:
        ax.plot(xs, ys, "o-", label=name)


def plot_efficiency(series: Series, path: Path, logx: bool, title: str = "",
                    caption: str | None = None) -> Path:
    """Efficiency E(p) of each named series of points (``ranks``, ``efficiency``)."""
    fig = new_figure()
    ax = fig.subplots()
    for name, pts in series.items():
        _plot_series(ax, name, pts, "efficiency")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="ideal")
    _xaxis(ax, series, logx)
    ax.set_ylabel("parallel efficiency E(p)")
    ax.set_ylim(0, 1.1)
    ax.set_title(title or "parallel efficiency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig, path, caption)


def plot_throughput(series: Series, path: Path, logx: bool, title: str = "",
                    caption: str | None = None) -> Path:
    """Samples/s vs p with the ideal line from p = 1 (weak) for the first series."""
    fig = new_figure()
    ax = fig.subplots()
    for name, pts in series.items():
        _plot_series(ax, name, pts, "samples_per_s")
    first = next(iter(series.values()))
    if first and first[0]["ranks"] == 1:
        r = [p["ranks"] for p in first]
        ax.plot(r, [first[0]["samples_per_s"] * x for x in r], ":", color="grey", label="ideal")
    _xaxis(ax, series, logx)
    if logx:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title(title or "throughput")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig, path, caption)


def plot_breakdown(pts: Sequence[dict[str, Any]], path: Path, title: str = "",
                   caption: str | None = None) -> Path:
    """Stacked step time per p: compute, exposed comm, hidden (overlapped) comm.

    The time unit (µs, ms, s) is chosen from the data; with repeats a bar marks the
    fastest and slowest step time measured at that p.
    """
    fig = new_figure()
    ax = fig.subplots()
    labels = [str(p["ranks"]) for p in pts]
    raw_comp = [p.get("compute_s", 0.0) or 0.0 for p in pts]
    raw_exp = [p.get("exposed_comm_s", 0.0) or 0.0 for p in pts]
    raw_hid = [max(0.0, (p.get("comm_s", 0.0) or 0.0) - e) for p, e in zip(pts, raw_exp, strict=True)]
    factor, unit = si_scale([c + e + h for c, e, h in zip(raw_comp, raw_exp, raw_hid, strict=True)], "s")
    comp = [v / factor for v in raw_comp]
    exp_ = [v / factor for v in raw_exp]
    tops = [c + e for c, e in zip(comp, exp_, strict=True)]
    x = list(range(len(pts)))
    ax.bar(x, comp, label="compute")
    ax.bar(x, exp_, bottom=comp, label="exposed comm")
    ax.bar(x, [v / factor for v in raw_hid], bottom=tops, alpha=0.35,
           label="overlapped comm (hidden)")
    spans = [spread(p, "step_s") for p in pts]
    if any(spans):
        mid = [p.get("step_s", t * factor) / factor for p, t in zip(pts, tops, strict=True)]
        err = [[max(m - s[0] / factor, 0.0) if s else 0.0 for m, s in zip(mid, spans, strict=True)],
               [max(s[1] / factor - m, 0.0) if s else 0.0 for m, s in zip(mid, spans, strict=True)]]
        ax.errorbar(x, mid, yerr=err, fmt="none", ecolor="black", capsize=3,
                    label="step time, min–max over repeats")
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 8 else 0)
    ax.set_xlabel("processes p")
    ax.set_ylabel(f"time per step ({unit})")
    ax.set_title(title or "where a step's time goes")
    top = max([t + h / factor for t, h in zip(tops, raw_hid, strict=True)], default=0.0)
    if top > 0:
        ax.set_ylim(0, top * 1.35)  # headroom: the legend sits above the bars
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return finish(fig, path, caption)


def _eval_keys(rows: Sequence[dict[str, Any]], headline: str | None) -> list[str]:
    """``eval/*`` keys, the headline metric first."""
    keys = sorted({k for r in rows for k in r if k.startswith("eval/")})
    return sorted(keys, key=lambda k: k != f"eval/{headline}")


def _finite_points(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r.get("step", 0)), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [s for s, _ in pts], [v for _, v in pts]


def best_and_final(rows: Sequence[dict[str, Any]], key: str,
                   higher_is_better: bool | None) -> dict[str, Any] | None:
    """``{"best", "best_step", "final", "final_step"}`` of a logged metric (None if never logged)."""
    steps, vals = _finite_points(rows, key)
    if not vals:
        return None
    pick = max if higher_is_better else min
    i = pick(range(len(vals)), key=vals.__getitem__)
    return {"best": vals[i], "best_step": steps[i], "final": vals[-1], "final_step": steps[-1]}


def _direction(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return ""
    return "higher is better" if higher_is_better else "lower is better"


def train_curves_figure(rows: Sequence[dict[str, Any]], headline: str | None = None,
                        higher_is_better: bool | None = None, title: str = "") -> Any:
    """Training loss and each ``eval/*`` metric on its own panel (headline metric first).

    Each metric keeps its own y axis, so a large one (``max_abs_err``) does not flatten
    a small one (``rel_l2``); the headline panel marks its best value.
    """
    evals = _eval_keys(rows, headline)
    n = 1 + len(evals)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = new_figure((4.2 * ncols, 3.2 * nrows + (0.5 if title else 0.3)))
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    steps, loss = _finite_points(rows, "loss")
    if loss:
        axes[0].plot(steps, loss, color="C0")
        if min(loss) > 0 and max(loss) / min(loss) > 20:  # log only when it spans decades
            axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    axes[0].set_ylabel("loss")
    ev_rows = eval_rows(rows)
    for ax, key in zip(axes[1:], evals, strict=False):
        name = key[5:]
        steps, vals = _finite_points(ev_rows, key)
        is_head = name == headline
        ax.plot(steps, vals, "o-", ms=3, color="C1" if is_head else "C2")
        ax.set_ylabel(name)
        ax.set_title(name)
        if is_head:
            bf = best_and_final(ev_rows, key, higher_is_better)
            if bf is not None:
                ax.plot([bf["best_step"]], [bf["best"]], "*", ms=12, color="C3", ls="none",
                        label=f"best {bf['best']:.4g} (step {bf['best_step']})")
                ax.legend(fontsize=8)
            better = _direction(higher_is_better)
            ax.set_title(f"{name}: headline" + (f", {better}" if better else ""))
    last = max((int(r.get("step", 0)) for r in rows), default=0)
    for ax in axes[:n]:
        if last > 0:
            ax.set_xlim(0, last * 1.03)  # one step axis for all panels, also for a lone point
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        integer_ticks(ax.xaxis)
    if title:
        fig.suptitle(title)
    return fig


def plot_train_curves(rows: Sequence[dict[str, Any]], path: Path, headline: str | None = None,
                      higher_is_better: bool | None = None, title: str = "",
                      caption: str | None = None) -> Path:
    """:func:`train_curves_figure` saved as PNG at ``path``."""
    return finish(train_curves_figure(rows, headline, higher_is_better, title), path, caption)


# ----------------------------------------------------------------------------- html

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;"
    "color:#222}h1{margin-bottom:.2em}.prov{color:#666;font-size:13px;margin-top:0}"
    ".headline{font-size:20px;background:#f3f7fb;border-left:5px solid #3b75af;"
    "padding:.6em 1em;margin:1em 0}.headline b{font-size:24px}.facts{color:#444}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:3px 7px;text-align:right}figure{display:inline-block;margin:6px;"
    "vertical-align:top}figcaption{font-size:12px;color:#666}"
    "img{max-width:100%}figure.narrow img{max-width:540px}"
    "pre{background:#f4f4f4;padding:8px;font-size:12px;overflow-x:auto}"
    "details{margin:.6em 0}summary{cursor:pointer;font-weight:600}"
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def _cell(col: str, v: Any) -> str:
    """A table cell: durations (columns ending in ``_s``) in human units, rates with commas."""
    if (re.search(r"_s(_min|_max)?$", col) and not col.endswith("per_s") and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)):
        return html.escape(format_si(float(v), "s"))
    if col.endswith("per_s") and isinstance(v, float) and math.isfinite(v) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return _fmt(v)


def html_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(p: Path, wide: bool) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    cls = "" if wide else ' class="narrow"'
    return (f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{html.escape(p.name)}">'
            f"<figcaption>{html.escape(p.name)}</figcaption></figure>")


def write_html(
    path: Path, title: str, sections: Sequence[tuple[str, str]], images: Sequence[Path],
    lead: str = "", caption: str = "", wide_images: bool = False,
) -> Path:
    """A self-contained HTML page: title, provenance line, ``lead`` (the headline), the
    embedded PNGs, then the sections of (heading, html): pictures before tables and settings."""
    prov = f'<p class="prov">{html.escape(caption)}</p>' if caption else ""
    imgs = "".join(_figure(p, wide_images) for p in images)
    secs = "".join(f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections)
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{prov}{lead}"
        f'<div class="plots">{imgs}</div>{secs}</body></html>'
    )
    atomic_write_text(path, doc)
    return path


def _details(label: str, text: str) -> str:
    return f"<details><summary>{html.escape(label)}</summary><pre>{html.escape(text)}</pre></details>"


def _caption(data: Mapping[str, Any], verb: str) -> str:
    """Provenance line of a results file (``provenance``, or the older ``host``/``created``)."""
    prov = data.get("provenance") or {k: data[k] for k in ("host", "created") if data.get(k)}
    return caption_text(prov, verb)


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
    what = f"{data.get('workload', '')}, {data.get('mode', '')} scaling, comm {data.get('comm', '?')}"
    cap = _caption(data, "measured")
    imgs = [
        plot_efficiency(series, run_dir / "scaling_efficiency.png", logx=False,
                        title=f"Parallel efficiency: {what}", caption=cap),
        plot_throughput(series, run_dir / "scaling_throughput.png", logx=False,
                        title=f"Throughput: {what}", caption=cap),
        plot_breakdown(pts, run_dir / "scaling_breakdown.png",
                       f"Step time breakdown: {what}", caption=cap),
    ]
    meta = {k: v for k, v in data.items() if k != "points"}
    sections = [
        ("Measurements", html_table(pts, [c for c in SCALE_COLS if any(c in p for p in pts)])),
        ("Settings", _details("scaling.json settings", json.dumps(meta, indent=2))),
    ]
    title = f"scidl scale: {data.get('workload', '')} ({data.get('mode', '')})"
    return write_html(run_dir / "report.html", title, sections, imgs, caption=cap)


def render_predict(run_dir: Path) -> Path:
    data = json.loads((run_dir / "prediction.json").read_text())
    curves: dict[str, list[dict[str, Any]]] = data["curves"]
    logx = max(p["ranks"] for c in curves.values() for p in c) > 64
    hw, mode = data.get("hardware", ""), data.get("mode", "weak")
    cap = _caption(data, "predicted")
    imgs = [
        plot_efficiency(curves, run_dir / "predict_efficiency.png", logx=logx,
                        title=f"Predicted efficiency on {hw} ({mode} scaling)", caption=cap),
        plot_throughput(curves, run_dir / "predict_throughput.png", logx=logx,
                        title=f"Predicted throughput on {hw} ({mode} scaling)", caption=cap),
    ]
    first_name, first = next(iter(curves.items()))
    imgs.append(plot_breakdown(first, run_dir / "predict_breakdown.png",
                               f"Predicted step time on {hw}: {first_name}", caption=cap))
    sections = [(name, html_table(c, PRED_COLS)) for name, c in curves.items()]
    meta = {k: v for k, v in data.items() if k != "curves"}
    sections.append(("Inputs", _details("prediction.json inputs", json.dumps(meta, indent=2))))
    return write_html(run_dir / "report.html", f"scidl predict: {hw}", sections, imgs, caption=cap)


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def eval_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows holding ``eval/*`` values, one per step (the final evaluation repeats the last
    periodic one at the same step: merged)."""
    by_step: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if any(k.startswith("eval/") for k in r):
            by_step.setdefault(r.get("step"), {}).update(r)
    return list(by_step.values())


def headline_html(summary: Mapping[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The report's first lines: headline metric best and final, then the run in one line."""
    evals = _eval_keys(rows, summary.get("headline"))
    name = summary.get("headline") or (evals[0][5:] if evals else None)
    hib = summary.get("higher_is_better")
    parts = []
    bf = best_and_final(rows, f"eval/{name}", hib) if name else None
    if bf is None and name and isinstance(summary.get("headline_value"), (int, float)):
        v = summary["headline_value"]
        bf = {"best": v, "best_step": summary.get("steps"), "final": v, "final_step": summary.get("steps")}
    if bf is not None:
        better = _direction(hib)
        parts.append(
            f'<div class="headline">{html.escape(str(name))}: best <b>{bf["best"]:.4g}</b> '
            f'(step {bf["best_step"]}) · final <b>{bf["final"]:.4g}</b> (step {bf["final_step"]})'
            + (f" <small>({better})</small>" if better else "") + "</div>")
    facts = []
    if summary.get("steps") is not None:
        ws = summary.get("world_size", 1)
        facts.append(f"{summary['steps']} steps on {ws} process{'es' if ws != 1 else ''}"
                     f" [{summary.get('backend', '?')}, {summary.get('device', '?')}]")
    if isinstance(summary.get("wall_s"), (int, float)):
        facts.append(f"wall time {format_si(summary['wall_s'], 's')}")
    if isinstance(summary.get("samples_per_s"), (int, float)):
        facts.append(f"{summary['samples_per_s']:,.0f} samples/s")
    if isinstance(summary.get("step_time_s"), (int, float)):
        facts.append(f"{format_si(summary['step_time_s'], 's')} per step")
    if isinstance(summary.get("final_loss"), (int, float)):
        facts.append(f"final loss {summary['final_loss']:.4g}")
    if facts:
        parts.append(f'<p class="facts">{html.escape(" · ".join(facts))}</p>')
    return "".join(parts)


def run_pictures(run_dir: Path) -> list[Path]:
    """The workload's own pictures of the trained model (``RUN_DIR/pictures/*.png``)."""
    folder = run_dir / "pictures"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def render_train(run_dir: Path) -> Path:
    """``report.html`` of a training run: headline, curves, the workload's pictures,
    evaluations, then config and summary."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    summ_path = run_dir / "summary.json"
    summary = _read_json(summ_path)
    workload = summary.get("workload") or run_dir.parent.name
    cap = _caption(summary, "trained")
    imgs = [plot_train_curves(rows, run_dir / "train_curves.png", summary.get("headline"),
                              summary.get("higher_is_better"),
                              title=f"{workload}: {run_dir.name}", caption=cap)]
    imgs += run_pictures(run_dir)
    sections = []
    evals = eval_rows(rows)
    if evals:
        cols = ["step"] + _eval_keys(evals, summary.get("headline"))
        sections.append(("Evaluations", html_table(evals, cols)))
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        sections.append(("Configuration", _details("config.yaml", cfg.read_text())))
    if summ_path.is_file():
        sections.append(("Summary", _details("summary.json", summ_path.read_text())))
    return write_html(run_dir / "report.html", f"scidl run: {workload} / {run_dir.name}", sections,
                      imgs, lead=headline_html(summary, rows), caption=cap, wide_images=True)


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
