"""Library plots leave matplotlib's global state alone: no backend switch, no pyplot figures.

Before, ``scidl.scaling.report``, ``scidl.search.report`` and ``scidl.analysis.topology``
called ``matplotlib.use("Agg")``, which switched the backend of a user's notebook or GUI
session under their feet.
"""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest


@pytest.fixture
def user_backend(monkeypatch):
    """A session whose backend is not Agg; any ``matplotlib.use`` call fails the test."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")

    def forbidden(*args, **kwargs):
        raise AssertionError(f"library code called matplotlib.use{args}")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    open_figures = plt.get_fignums()
    yield
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_figures
    plt.switch_backend(before)


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_plots(tmp_path, user_backend):
    from scidl.scaling.report import (
        plot_breakdown,
        plot_efficiency,
        plot_throughput,
        plot_train_curves,
    )

    pts = [{"ranks": p, "efficiency": 1 / p, "samples_per_s": 10.0 * p, "compute_s": 0.1,
            "comm_s": 0.05, "exposed_comm_s": 0.02} for p in (1, 2, 4)]
    rows = [{"step": i, "loss": 1.0 / i} for i in range(1, 5)] + [{"step": 4, "eval/acc": 0.5}]
    outs = [plot_efficiency({"m": pts}, tmp_path / "e.png", logx=False),
            plot_throughput({"m": pts}, tmp_path / "t.png", logx=True),
            plot_breakdown(pts, tmp_path / "b.png", "title"),
            plot_train_curves(rows, tmp_path / "c.png")]
    assert all(_is_png(p) for p in outs)


def test_search_pareto_plot(tmp_path, user_backend):
    import optuna

    from scidl.search.report import plot_pareto

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for i in range(4):
        study.add_trial(optuna.trial.create_trial(values=[1.0 / (i + 1), 0.1 * (i + 1)]))
    settings = SimpleNamespace(metric="loss", workload="toy")
    plot_pareto(study, settings, study.best_trials, tmp_path / "pareto.png")  # type: ignore[arg-type]
    assert _is_png(tmp_path / "pareto.png")


def test_morse_smale_plot(tmp_path, user_backend):
    from scidl.analysis.topology import morse_smale, plot_morse_smale

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 2))
    f = np.exp(-20 * ((X - 0.3) ** 2).sum(1)) + np.exp(-20 * ((X - 0.7) ** 2).sum(1))
    out = plot_morse_smale(X, f, morse_smale(X, f, k=8), tmp_path / "sub" / "ms.png")
    assert _is_png(out)


def test_collectives_plot(tmp_path, user_backend):
    from scidl.commands.bench_collectives import _plot

    rows = [{"op": "allreduce", "ranks": 2, "bytes": b, "time_s": 1e-5 + b * 1e-9}
            for b in (1024, 4096, 16384)]
    outs = _plot(rows, {"alpha": 1e-5, "beta": 1e-9, "gamma": 0.0}, tmp_path, "caption")
    assert [p.name for p in outs] == ["collectives_busbw.png", "collectives_time.png"]
    assert all(_is_png(p) for p in outs)


def test_busbw_plot_shows_bus_bandwidth(user_backend):
    """``collectives_busbw.png`` plotted the time per collective; it plots busbw now.

    busbw = n / t · 2(p−1)/p for allreduce and n / t · (p−1)/p for allgather (nccl-tests),
    with error bars from the fastest and slowest repeat.
    """
    from scidl.commands.bench_collectives import busbw_figure

    rows = []
    for op in ("allreduce", "allgather"):
        for b in (4096, 65536, 1048576):
            t = 2e-5 + b * 1e-9
            rows.append({"op": op, "ranks": 4, "bytes": b, "time_s": t,
                         "time_s_min": 0.8 * t, "time_s_max": 1.5 * t})
    fit = {"alpha": 1e-5, "beta": 1e-9, "gamma": 0.0}
    fig = busbw_figure(rows, fit)
    ax = fig.axes[0]
    assert "bus bandwidth" in ax.get_ylabel()
    got = {c.get_label(): c for c in ax.containers}
    factor = {"allreduce": 2 * 3 / 4, "allgather": 3 / 4}
    for op, f in factor.items():
        mine = [r for r in rows if r["op"] == op]
        cont = got[f"{op}, p = 4"]
        np.testing.assert_allclose(np.asarray(cont.lines[0].get_xdata(), float), [r["bytes"] for r in mine])
        np.testing.assert_allclose(np.asarray(cont.lines[0].get_ydata(), float),
                                   [r["bytes"] / r["time_s"] * f for r in mine])
        segs = cont.lines[2][0].get_segments()  # error bar: slowest to fastest repeat
        np.testing.assert_allclose([s[0][1] for s in segs],
                                   [r["bytes"] / r["time_s_max"] * f for r in mine])
        np.testing.assert_allclose([s[1][1] for s in segs],
                                   [r["bytes"] / r["time_s_min"] * f for r in mine])
    assert ax.yaxis.get_major_formatter()(1.5e9, 0) == "1.5 GB/s"
    assert ax.xaxis.get_major_formatter()(65536, 0) == "64 KiB"
    # a noisy run whose fit clamps every coefficient at 0 still plots its measurements
    flat = busbw_figure(rows, {"alpha": 0.0, "beta": 0.0, "gamma": 0.0})
    assert len(flat.axes[0].containers) == 2
    assert all(np.isnan(np.asarray(ln.get_ydata(), float)).all()
               for ln in flat.axes[0].lines if ln.get_linestyle() == "-")
