"""Search outputs: progress line, ``trials.csv``, ``best.yaml``, plots, ``summary.json``."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from scidl.runtime.files import atomic_write_text
from scidl.runtime.plotting import caption_text, finish, integer_ticks, new_figure, si_axis
from scidl.search.base import get_searcher
from scidl.search.heartbeat import RETRY_OF
from scidl.search.settings import SearchSettings


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def result_of(t: FrozenTrial) -> dict[str, Any]:
    """The ``result`` user attribute of a finished trial ({} if none)."""
    return t.user_attrs.get("result") or {}


def _metric_of(t: FrozenTrial, settings: SearchSettings) -> float | None:
    v = result_of(t).get("value")
    return None if v is None else float(v)


def best_metric(trials: list[FrozenTrial], settings: SearchSettings) -> tuple[float | None, int | None]:
    """Best raw metric among complete trials and its trial number."""
    best, num = None, None
    sign = 1 if settings.direction == "maximize" else -1
    for t in trials:
        v = _metric_of(t, settings) if t.state == TrialState.COMPLETE else None
        if v is not None and math.isfinite(v) and (best is None or sign * v > sign * best):
            best, num = v, t.number
    return best, num


def progress_line(trials: list[FrozenTrial], settings: SearchSettings, elapsed: float) -> str:
    """``search greedy admissions: 7/20 done, 2 running, 1 failed, 0 pruned | best r2 0.81 (#5)``."""
    count = {s: 0 for s in TrialState}
    for t in trials:
        count[t.state] += 1
    best, num = best_metric(trials, settings)
    done = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
    rate = done / elapsed * 60 if elapsed > 0 else 0.0
    best_s = f"best {settings.metric} {_fmt(best)} (#{num})" if best is not None else "best -"
    return (f"search {settings.strategy} {settings.workload}: {done}/{settings.trials} done, "
            f"{count[TrialState.RUNNING]} running, {count[TrialState.FAIL]} failed, "
            f"{count[TrialState.PRUNED]} pruned | {best_s} | {rate:.1f} trials/min "
            f"| {elapsed:.0f}s")


def trial_rows(study: optuna.Study, settings: SearchSettings) -> list[dict[str, Any]]:
    """One flat dict per trial (the rows of ``trials.csv``)."""
    rows = []
    names = ["value"] if len(study.directions) == 1 else ["value_metric", "value_latency_ms"]
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, n in enumerate(names):
            row[n] = t.values[i] if t.values and i < len(t.values) else None
        res = result_of(t)
        row[settings.metric] = res.get("value")
        row.update({f"param_{k}": v for k, v in t.params.items()})
        for key in ("n_params", "latency_ms", "wall_s"):
            row[key] = res.get(key)
        for key in ("worker", "run_dir", "error"):
            row[key] = t.user_attrs.get(key)
        row["retry_of"] = t.user_attrs.get(RETRY_OF)
        row["start"] = t.datetime_start.isoformat() if t.datetime_start else None
        row["complete"] = t.datetime_complete.isoformat() if t.datetime_complete else None
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def utilisation(trials: list[FrozenTrial], workers: int, window: tuple[float, float] | None) -> float | None:
    """Busy time / (workers × wall time) over the finished trials in ``window``."""
    spans = []
    for t in trials:
        if t.datetime_start is None or t.datetime_complete is None:
            continue
        a, b = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
        if window is None or (a >= window[0] - 1 and b <= window[1] + 1):
            spans.append((a, b))
    if not spans:
        return None
    start, end = (window if window else (min(a for a, _ in spans), max(b for _, b in spans)))
    wall = end - start
    return sum(b - a for a, b in spans) / (workers * wall) if wall > 0 else None


def history_figure(study: optuna.Study, settings: SearchSettings) -> Any:
    """Metric per trial (and best so far) against trial number (whole-number ticks)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if result_of(t).get("value") is not None]
    fig = new_figure((6.4, 4.0))
    ax = fig.subplots()
    xs = [t.number for t in done]
    ys = [float(result_of(t)["value"]) for t in done]
    depth = next((k for k in ("depth", "n_conv") if done and k in done[0].params), None)
    if depth:
        sc = ax.scatter(xs, ys, c=[t.params.get(depth, 0) for t in done], cmap="viridis", s=18)
        integer_ticks(fig.colorbar(sc, ax=ax, label=depth).ax.yaxis)
    else:
        ax.scatter(xs, ys, s=18, label="trials")
    best, run = [], None
    for y in ys:
        run = y if run is None else (max(run, y) if settings.direction == "maximize" else min(run, y))
        best.append(run)
    ax.step(xs, best, where="post", color="C3", label="best so far")
    integer_ticks(ax.xaxis)
    ax.set_xlabel("trial number")
    better = "higher" if settings.direction == "maximize" else "lower"
    ax.set_ylabel(f"{settings.metric} ({better} is better)")
    ax.set_title(f"{settings.strategy} search on {settings.workload}: {len(done)} complete trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


def plot_history(study: optuna.Study, settings: SearchSettings, path: Path,
                 caption: str | None = None) -> None:
    """:func:`history_figure` saved as PNG, with a provenance footer."""
    finish(history_figure(study, settings), path, caption_text(None) if caption is None else caption)


def plot_pareto(study: optuna.Study, settings: SearchSettings, front: list[FrozenTrial], path: Path,
                caption: str | None = None) -> None:
    """All trials in (latency, metric) with the Pareto front highlighted."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig = new_figure((6.4, 4.2))
    ax = fig.subplots()
    # values[1] is the latency in ms: plotted in seconds so the axis picks µs / ms / s
    ax.scatter([t.values[1] * 1e-3 for t in done], [t.values[0] for t in done], s=14, c="0.6",
               label="trials")
    f = sorted(front, key=lambda t: t.values[1])
    ax.plot([t.values[1] * 1e-3 for t in f], [t.values[0] for t in f], "o-", c="C3",
            label="Pareto front")
    ax.set_xscale("log")
    si_axis(ax.xaxis, "s")
    ax.set_xlabel("inference latency per sample")
    ax.set_ylabel(settings.metric)
    ax.set_title(f"NSGA-II on {settings.workload}: accuracy vs latency ({len(done)} trials)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best")
    finish(fig, path, caption_text(None) if caption is None else caption)


def _trial_brief(t: FrozenTrial) -> dict[str, Any]:
    res = result_of(t)
    return {"number": t.number, "values": t.values, "params": t.params,
            "metric": res.get("value"), "n_params": res.get("n_params"),
            "latency_ms": res.get("latency_ms"), "run_dir": t.user_attrs.get("run_dir")}


def write_report(
    study: optuna.Study, settings: SearchSettings, out: Path, workers: int = 1,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Write trials.csv, best.yaml, pareto.csv, history/pareto PNGs and summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(trial_rows(study, settings), out / "trials.csv")
    searcher = get_searcher(settings.strategy)
    best = searcher.best_trials(study)
    summary: dict[str, Any] = {"study": study.study_name, "strategy": settings.strategy,
                               "workload": settings.workload, "metric": settings.metric}
    trials = study.get_trials(deepcopy=False)
    # busy / (workers x wall): from the driver's start (worker start-up counts as idle), and
    # in steady state (first trial start -> last trial end)
    summary["utilisation"] = utilisation(trials, workers, window)
    if window is not None:
        inside = [t for t in trials if t.datetime_start and t.datetime_start.timestamp() >= window[0] - 1]
        summary["utilisation_steady"] = utilisation(inside, workers, None)
    if best:
        # Multi-objective: best.yaml is the most accurate network on the front.
        sign = 1 if settings.direction == "maximize" else -1
        top = max(best, key=lambda t: sign * float(result_of(t).get("value", t.values[0])))
        summary["best"] = _trial_brief(top)
        cfg = top.user_attrs.get("config")
        if cfg is not None:
            atomic_write_text(out / "best.yaml", yaml.safe_dump(cfg, sort_keys=False))
        if searcher.multi_objective:
            summary["pareto"] = [_trial_brief(t) for t in best]
            write_csv([{"number": t.number, settings.metric: t.values[0], "latency_ms": t.values[1],
                        "n_params": result_of(t).get("n_params"),
                        **{f"param_{k}": v for k, v in t.params.items()}} for t in best],
                      out / "pareto.csv")
            plot_pareto(study, settings, best, out / "pareto.png")
        plot_history(study, settings, out / "history.png")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


__all__ = ["progress_line", "trial_rows", "write_report", "utilisation", "optuna"]
