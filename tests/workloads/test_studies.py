"""``scidl study STUDY …``: each workload's research study as a subcommand.

Help lists the studies and each study's options; bad input is one line with exit status 2;
the studies write their JSON records and PNG plots (Figure API, no global backend change).
"""

from __future__ import annotations

import json

import matplotlib
import pytest

from scidl.cli import main
from scidl.commands.study import STUDIES


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scidl: error: "), err
    return err[0]


def test_study_help_lists_every_study(capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert set(STUDIES) == {"burgers", "nbody", "cgan_per_label"}
    for name, (_, desc) in STUDIES.items():
        assert f"{name}  " in out and desc in out


@pytest.mark.parametrize("name, options", [
    ("burgers", ["--adam", "--lbfgs", "--set", "--shard", "--tag", "--out", "--plot"]),
    ("nbody", ["train", "kepler", "long", "general", "speed", "report", "--kick", "--json"]),
    ("cgan_per_label", ["--nproc", "--steps", "--seed"]),
])
def test_each_study_help_lists_its_options(name, options, capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: scidl study {name}")
    for opt in options:
        assert opt in out, opt


@pytest.mark.parametrize("argv, words", [
    (["study"], "name a study"),
    (["study", "burger"], "did you mean burgers"),
    (["study", "burgers", "--adam", "x"], "--adam: invalid int value"),
    (["study", "burgers", "--bogus"], "unrecognized arguments: --bogus"),
    (["study", "nbody", "orbit"], "invalid choice: 'orbit'"),
    (["study", "burgers", "--adam", "0", "--set", "nope=1"], "invalid 'nope'"),
    (["study", "burgers", "--adam", "0", "--set", "hidden"], "expected field=value"),
])
def test_bad_study_input_is_one_line_exit_2(argv, words, capsys):
    assert main(argv) == 2
    assert words in _one_line_error(capsys)


def test_burgers_study_writes_record_and_plot(tmp_path, capsys):
    backend = matplotlib.get_backend()
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    small = ["--set", "n_collocation=64", "--set", "hidden=8", "--set", "depth=2",
             "--set", "ref_nx=16", "--set", "ref_nt=8", "--set", "ref_nodes=101",
             "--set", "rar_candidates=32"]
    argv = ["study", "burgers", "--adam", "2", "--lbfgs", "1", "--lbfgs-max-iter", "3", "--tag", "t", *small,
            "--out", str(out), "--plot", str(png)]
    assert main(argv) == 0
    rec = json.loads(out.read_text())["t"]
    assert rec["adam"] == 2 and rec["task"]["hidden"] == 8 and rec["lbfgs_max_iter"] == 3
    assert "lbfgs_max_iter" not in rec["task"]  # one place for L-BFGS settings: optim.*
    assert [r["phase"] for r in rec["history"]] == ["adam", "lbfgs"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend  # no matplotlib.use in library code


def test_nbody_study_long_run_then_report(tmp_path, capsys):
    backend = matplotlib.get_backend()
    js, png = tmp_path / "n.json", tmp_path / "e.png"
    assert main(["study", "nbody", "long", "--kick", "classical", "--steps", "40",
                 "--json", str(js)]) == 0
    assert main(["study", "nbody", "report", "--json", str(js), "--plot", str(png)]) == 0
    data = json.loads(js.read_text())
    assert data["long_classical"]["n_steps"] == 40
    assert data["report"]["classical"]["dE_max"] < 1e-6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
