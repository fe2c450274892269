"""Malformed inputs to ``scidl``: each must end as one line naming the key or cause.

Every case is a command line (plus optional files and environment variables). A case
passes when the command exits with status 2, stderr holds no Python traceback, the error
line contains the expected fragment, and no run folder (nor any other file) is left
behind; a finished run used by the ``--resume`` cases must be left unchanged. Most cases
run in this process through ``scidl.cli.main``; the few whose error is raised inside a
worker process run ``python -m scidl`` as a subprocess.

    python benchmarks/malformed_inputs.py          # writes benchmarks/results/reliability.json

``tests/foundation/test_fd_bad_input.py`` runs the same table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"
RODIR = object()  # in Case.files: make a read-only folder
DIR = object()  # in Case.files: make an empty folder
# A small, fast training workload; every train case adds these settings.
FAST = ["-q", "log.tensorboard=false", "train.max_steps=2"]


@dataclass(frozen=True)
class Case:
    """One malformed input.

    ``argv`` may use ``{tmp}`` (the case's own empty working folder) and ``{run}`` (a
    finished one-process admissions run). ``files`` maps names under ``{tmp}`` to their
    text (or bytes, DIR, RODIR). ``subprocess``: the error is raised in worker processes.
    """

    id: str
    argv: list[str]
    expect: str
    files: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    subprocess: bool = False
    needs_root_not: bool = False  # a permission case that root bypasses
    needs_no_cuda: bool = False  # only an error on a machine without CUDA
    needs_root: bool = False  # the message of a root-only command (else: "needs root")


def _train(*args: str) -> list[str]:
    return ["train", "admissions", *args, *FAST]


CASES: list[Case] = [
    # ---- keys and values
    Case("unknown-key", _train("train.bach_size=4"), "unknown config key 'train.bach_size'"),
    Case("unknown-section", _train("trian.batch_size=4"), "unknown config key 'trian"),
    Case("unknown-task-key", _train("task.hiden=[4]"), "task.hiden"),
    Case("int-not-a-number", _train("train.batch_size=abc"), "'train.batch_size'"),
    Case("int-given-float", _train("train.batch_size=1.5"), "'train.batch_size'"),
    Case("batch-zero", _train("train.batch_size=0"), "'train.batch_size'"),
    Case("batch-negative", _train("train.batch_size=-1"), "'train.batch_size'"),
    Case("grad-accum-zero", _train("train.grad_accum=0"), "'train.grad_accum'"),
    Case("epochs-negative", ["train", "admissions", "--epochs", "-3", "-q"], "'train.epochs'"),
    Case("max-steps-zero", ["train", "admissions", "--max-steps", "0", "-q"], "'train.max_steps'"),
    Case("lr-inf", _train("optim.lr=inf"), "'optim.lr': must be a finite number"),
    Case("lr-nan", _train("optim.lr=nan"), "'optim.lr'"),
    Case("lr-negative", _train("optim.lr=-0.1"), "'optim.lr'"),
    Case("lr-zero", _train("optim.lr=0"), "'optim.lr'"),
    Case("momentum-above-1", _train("optim.momentum=1.5"), "'optim.momentum'"),
    Case("betas-one-value", _train("optim.betas=[0.9]"), "'optim.betas"),
    Case("betas-nan", _train("optim.betas=[0.9,.nan]"), "'optim.betas.1': must be a finite"),
    Case("clip-inf", _train("train.clip_grad_norm=inf"), "'train.clip_grad_norm': must be a finite"),
    Case("clip-zero", _train("train.clip_grad_norm=0"), "'train.clip_grad_norm'"),
    Case("timeout-inf", _train("dist.timeout_s=inf"), "'dist.timeout_s': must be a finite"),
    Case("timeout-zero", _train("dist.timeout_s=0"), "'dist.timeout_s'"),
    Case("precision-unknown", _train("train.precision=fp8"), "'train.precision'"),
    Case("bool-not-a-bool", _train("train.deterministic=maybe"), "'train.deterministic'"),
    Case("keep-zero", _train("checkpoint.keep=0"), "'checkpoint.keep'"),
    Case("threads-zero", _train("dist.threads_per_proc=0"), "'dist.threads_per_proc'"),
    Case("optimizer-unknown", _train("optim.name=adamm"), "'optim.name'"),
    Case("optimizer-flag-unknown", _train("--optim", "sgdd"), "'optim.name'"),
    Case("strategy-unknown", _train("comm.strategy=foo"), "'comm.strategy'"),
    Case("strategy-flag-unknown", _train("--comm", "zip"), "'comm.strategy'"),
    Case("auto-candidate-setting-unknown",
         _train("comm.strategy=auto", "comm.auto_candidates=[dense,quant:bits=4]"),
         "no comm field bits"),
    Case("auto-candidate-setting-bad",
         _train("comm.strategy=auto", "comm.auto_candidates=[dense,quant:quant_bits=3]"),
         "quant:quant_bits=3"),
    Case("hidden-zero", _train("task.hidden=[0]"), "'task.hidden.0'"),
    Case("hidden-negative", ["train", "digits", "task.hidden=[-3]", *FAST], "'task.hidden.0'"),
    Case("channels-zero", ["train", "digits", "task.channels=[0]", *FAST], "'task.channels.0'"),
    Case("dropout-above-1", _train("task.dropout=1.5"), "'task.dropout'"),
    Case("backend-unknown", _train("dist.backend=mpi"), "'dist.backend'"),
    Case("device-unknown", _train("dist.device=tpu"), "'dist.device'"),
    Case("schedule-unknown", _train("parallel.schedule=zigzag"), "'parallel.schedule'"),
    Case("stages-zero", _train("parallel.pipeline_stages=0"), "'parallel.pipeline_stages'"),
    # ---- devices and process layout (checked before anything starts)
    Case("cuda-without-gpu", _train("dist.device=cuda"), "dist.device=cuda", needs_no_cuda=True),
    Case("nccl-without-gpu", _train("dist.backend=nccl"), "dist.backend=nccl", needs_no_cuda=True),
    Case("nccl-on-cpu", _train("dist.backend=nccl", "dist.device=cpu"), "dist.backend=nccl"),
    Case("nproc-zero", _train("--nproc", "0"), "'dist.nproc'"),
    Case("nproc-negative", _train("--nproc", "-2"), "'dist.nproc'"),
    Case("nproc-not-int", _train("--nproc", "two"), "argument --nproc: invalid int value"),
    Case("restarts-negative", _train("--max-restarts", "-1"), "'dist.max_restarts'"),
    Case("stages-not-dividing", _train("--nproc", "2", "parallel.pipeline_stages=3"),
         "parallel.pipeline_stages=3 does not divide the 2 process(es)"),
    Case("stages-with-grad-accum", _train("--nproc", "2", "parallel.pipeline_stages=2",
                                          "train.grad_accum=2"), "not train.grad_accum"),
    Case("microbatches-not-dividing", _train("--nproc", "2", "parallel.pipeline_stages=2",
                                             "parallel.microbatches=3", "train.batch_size=16"),
         "parallel.microbatches=3"),
    Case("shard-with-compression", _train("--nproc", "2", "parallel.shard=full", "comm.strategy=topk"),
         "comm.strategy=topk does not apply with parallel.shard=full"),
    Case("shard-with-pipeline", _train("--nproc", "2", "parallel.shard=full",
                                       "parallel.pipeline_stages=2"), "does not compose"),
    Case("shard-size-not-dividing", _train("--nproc", "2", "parallel.shard=hybrid",
                                           "parallel.shard_size=3"), "parallel.shard_size=3"),
    Case("async-save-without-dcp", _train("checkpoint.async_save=true"),
         "checkpoint.async_save needs checkpoint.format=dcp"),
    Case("global-batch-not-divisible", _train("--nproc", "2", "train.global_batch_size=33"),
         "train.global_batch_size=33 is not divisible"),
    Case("global-batch-vs-grad-accum", _train("train.global_batch_size=3", "train.grad_accum=2"),
         "train.global_batch_size=3 is not divisible"),
    Case("batch-larger-than-dataset", _train("train.batch_size=100000"), "lower train.batch_size"),
    Case("batch-larger-than-dataset-2proc", _train("--nproc", "2", "train.batch_size=100000"),
         "lower train.batch_size", subprocess=True),
    # ---- how overrides and files combine
    Case("override-without-value", _train("train.batch_size"), "is not of the form key=value"),
    Case("override-empty-key", _train("=5"), "is not of the form key=value"),
    Case("override-empty-key-part", _train("train..batch_size=4"), "has an empty part"),
    Case("override-value-then-section", _train("dist=4", "dist.nproc=2"), "conflicts"),
    Case("override-section-then-value", _train("dist.nproc=2", "dist=4"), "replaces the section"),
    Case("override-value-vs-flag", _train("dist=4", "--nproc", "2"), "'dist' is a section"),
    Case("yaml-value-vs-flag", ["train", "--config", "{tmp}/c.yaml", "--nproc", "2", *FAST],
         "'dist' is a section", files={"c.yaml": "workload: admissions\ndist: 4\n"}),
    Case("yaml-section-vs-override", ["train", "--config", "{tmp}/c.yaml", "dist=2", *FAST],
         "'dist' is a section", files={"c.yaml": "workload: admissions\ndist: {nproc: 1}\n"}),
    Case("yaml-section-as-value", ["train", "--config", "{tmp}/c.yaml", *FAST], "'train'",
         files={"c.yaml": "workload: admissions\ntrain: 5\n"}),
    Case("task-as-value", _train("task=5"), "'task'"),
    Case("workload-unknown", ["train", "burgerz", *FAST], "burgers"),
    Case("workload-missing", ["train", "-q"], "name a workload"),
    Case("config-missing", ["train", "--config", "{tmp}/nope.yaml"], "config file not found"),
    Case("config-empty", ["train", "--config", "{tmp}/c.yaml"], "is empty", files={"c.yaml": ""}),
    Case("config-a-list", ["train", "--config", "{tmp}/c.yaml"], "mapping at the top level",
         files={"c.yaml": "- 1\n- 2\n"}),
    Case("config-bad-yaml", ["train", "--config", "{tmp}/c.yaml"], "is not valid YAML",
         files={"c.yaml": "train: {batch_size: 4\n"}),
    Case("config-binary", ["train", "--config", "{tmp}/c.yaml"], "is not valid YAML",
         files={"c.yaml": b"\xff\xfe\x00\x01"}),
    Case("config-a-folder", ["train", "--config", "{tmp}/c"], "is not a file", files={"c": DIR}),
    Case("config-names-no-workload", ["train", "--config", "{tmp}/c.yaml"], "names no workload",
         files={"c.yaml": "train: {batch_size: 4}\n"}),
    Case("config-workload-not-a-name", ["train", "--config", "{tmp}/c.yaml"], "'workload'",
         files={"c.yaml": "workload: 5\n"}),
    Case("config-unknown-key", ["train", "--config", "{tmp}/c.yaml"], "unknown config key 'train.bs'",
         files={"c.yaml": "workload: admissions\ntrain: {bs: 4}\n"}),
    # ---- run folders
    Case("run-dir-is-a-file", _train("--run-dir", "{tmp}/f"), "is a file", files={"f": "x"}),
    Case("run-dir-holds-a-run", _train("--run-dir", "{run}"), "already holds a run"),
    Case("run-dir-override-holds-a-run", _train("log.run_dir={run}"), "already holds a run"),
    Case("root-is-a-file", _train("log.root={tmp}/f"), "is a file", files={"f": "x"}),
    Case("root-under-a-file", _train("log.root={tmp}/f/sub"), "is a file", files={"f": "x"}),
    Case("root-read-only", _train("log.root={tmp}/ro/runs"), "not writable", files={"ro": RODIR},
         needs_root_not=True),
    Case("root-in-proc", _train("log.root=/proc/scidl-runs"), "not writable"),
    Case("run-dir-read-only", _train("--run-dir", "{tmp}/ro/r1"), "not writable",
         files={"ro": RODIR}, needs_root_not=True),
    Case("resume-missing", ["train", "--resume", "{tmp}/nope"], "no config.yaml"),
    Case("resume-not-a-run", ["train", "--resume", "{tmp}"], "no config.yaml"),
    Case("resume-and-other-run-dir", ["train", "--resume", "{run}", "--run-dir", "{tmp}/x"],
         "name different folders"),
    Case("resume-and-config", ["train", "--resume", "{run}", "--config", "{run}/config.yaml"],
         "do not pass --config"),
    Case("resume-other-nproc", ["train", "--resume", "{run}", "--nproc", "2",
                                "parallel.pipeline_stages=2", "-q"],
         "pipeline stages do not reshard", subprocess=True),
    # ---- launch environment
    Case("mpi-without-master-addr", _train(), "MASTER_ADDR",
         env={"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}),
    Case("torchrun-rank-not-int", _train(), "RANK='abc' is not an integer",
         env={"RANK": "abc", "WORLD_SIZE": "2"}),
    Case("torchrun-rank-outside-world", _train(), "outside world size",
         env={"RANK": "5", "WORLD_SIZE": "2"}),
    Case("mpi-size-missing", _train(), "OMPI_COMM_WORLD_SIZE is not set",
         env={"OMPI_COMM_WORLD_RANK": "0"}),
    Case("pmi-size-missing", _train(), "PMI_SIZE is not set", env={"PMI_RANK": "0"}),
    # ---- other commands
    Case("config-cmd-lr-inf", ["config", "admissions", "optim.lr=inf"], "'optim.lr'"),
    Case("config-cmd-unknown-workload", ["config", "nope"], "unknown workload"),
    Case("search-trials-zero", ["search", "admissions", "--trials", "0", "--out", "{tmp}/s"],
         "--trials must be >= 1"),
    Case("search-trials-negative", ["search", "admissions", "--trials", "-4", "--out", "{tmp}/s"],
         "--trials must be >= 1"),
    Case("search-workers-zero", ["search", "admissions", "--workers", "0", "--out", "{tmp}/s"],
         "--workers must be >= 1"),
    Case("search-heartbeat-zero", ["search", "admissions", "--heartbeat", "0", "--out", "{tmp}/s"],
         "--heartbeat must be a positive"),
    Case("search-retries-negative", ["search", "admissions", "--max-retries", "-1",
                                     "--out", "{tmp}/s"], "--max-retries must be >= 0"),
    Case("search-config-missing", ["search", "admissions", "--config", "{tmp}/nope.yaml",
                                   "--out", "{tmp}/s"], "config file not found"),
    Case("command-unknown", ["trian", "admissions"], "invalid choice: 'trian'"),
    # ---- metrics destinations and the virtual cluster
    Case("logger-unknown", _train("log.loggers=[cvs]"), "unknown log.loggers 'cvs' (did you mean csv"),
    Case("logger-module-missing", _train("log.loggers=[nomod:Cls]"), "log.loggers: cannot load 'nomod:Cls'"),
    Case("cluster-not-up", _train("--cluster", "nosuch", "--ranks-per-node", "1"),
         "cluster 'nosuch' is not up", needs_root=True),
]


# ----------------------------------------------------------------------------- running


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot be checked on this machine (None: it can)."""
    if case.needs_root_not and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root ignores folder permissions"
    if case.needs_root and not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return "the virtual cluster needs root"
    if case.needs_no_cuda:
        import torch

        if torch.cuda.is_available():
            return "this machine has a CUDA device"
    return None


def _fill(text: str, tmp: Path, run: Path | None) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{run}", str(run))


def _make_files(case: Case, tmp: Path) -> None:
    for name, content in case.files.items():
        p = tmp / name
        if content is DIR or content is RODIR:
            p.mkdir(parents=True)
            if content is RODIR:
                p.chmod(stat.S_IRUSR | stat.S_IXUSR)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        with contextlib.suppress(OSError):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def _environment(env: dict[str, str], cwd: Path) -> Iterator[None]:
    saved, old_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(saved)


def _run_in_process(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    from scidl.cli import main

    err, out = io.StringIO(), io.StringIO()
    with _environment(env, cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is what the table counts
            traceback.print_exc(file=err)
            code = 1
    return code, err.getvalue()


def _run_subprocess(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "scidl", *argv], cwd=cwd, env=full,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stderr


def run_case(case: Case, tmp: Path, run: Path | None) -> dict[str, Any]:
    """Run one case in the empty folder ``tmp``; returns what happened."""
    _make_files(case, tmp)
    argv = [_fill(a, tmp, run) for a in case.argv]
    before = _snapshot(tmp)
    run_before = _snapshot(run) if run else {}
    t0 = time.perf_counter()
    runner = _run_subprocess if case.subprocess else _run_in_process
    code, stderr = runner(argv, case.env, tmp)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    message = errors[-1] if errors else (lines[-1] if lines else "")
    after = _snapshot(tmp)
    left = sorted(set(after) - set(before))
    for name in case.files:  # let the cleanup remove read-only folders
        with contextlib.suppress(OSError):
            (tmp / name).chmod(stat.S_IRWXU)
    return {
        "id": case.id,
        "argv": " ".join(case.argv),
        "files": {k: ("<folder>" if v is DIR else "<read-only folder>" if v is RODIR
                      else v.decode("latin-1") if isinstance(v, bytes) else v)
                  for k, v in case.files.items()},
        "env": case.env,
        "where": "worker processes" if case.subprocess else "validation",
        "expect": case.expect,
        "exit_code": code,
        "message": message.replace(str(tmp), "{tmp}").replace(str(run), "{run}"),
        "one_line": len(errors) == 1,
        "traceback": "Traceback" in stderr,
        "silently_accepted": code == 0,
        "leftover": left,
        "run_changed": run_before != (_snapshot(run) if run else {}),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """What is wrong with a case's outcome ([] when it passed)."""
    bad = []
    if result["exit_code"] != 2:
        bad.append(f"exit status {result['exit_code']}, not 2")
    if result["traceback"]:
        bad.append("a traceback on stderr")
    if not result["one_line"]:
        bad.append("not exactly one error line")
    if result["expect"] not in result["message"]:
        bad.append(f"message lacks {result['expect']!r}")
    if result["leftover"]:
        bad.append(f"left behind {result['leftover'][:3]}")
    if result["run_changed"]:
        bad.append("the finished run was changed")
    return bad


def make_finished_run(root: Path) -> Path:
    """A one-process admissions run of 2 steps (for the --resume / --run-dir cases)."""
    import scidl

    cfg = scidl.load_config("admissions", overrides=[
        "train.max_steps=2", "log.tensorboard=false", "log.progress=false",
        f"log.run_dir={root / 'finished-run'}", f"log.root={root}"])
    return scidl.run(cfg).run_dir


def run_table(cases: list[Case] | None = None) -> dict[str, Any]:
    """Run every case; returns the JSON written to ``benchmarks/results/reliability.json``."""
    cases = CASES if cases is None else cases
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="scidl-malformed-") as d:
        base = Path(d)
        run = make_finished_run(base / "shared")
        for i, case in enumerate(cases):
            reason = skip_reason(case)
            if reason:
                skipped.append({"id": case.id, "reason": reason})
                continue
            tmp = base / f"case{i:03d}"
            tmp.mkdir()
            res = run_case(case, tmp, run)
            res["problems"] = verdict(res)
            results.append(res)
            print(f"{'ok  ' if not res['problems'] else 'FAIL'} {case.id}: {res['message'][:100]}",
                  file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "total": len(results),
        "passed": sum(not r["problems"] for r in results),
        "tracebacks": sum(r["traceback"] for r in results),
        "silently_accepted": sum(r["silently_accepted"] for r in results),
        "leftover_folders": sum(bool(r["leftover"]) for r in results),
        "in_worker_processes": sum(r["where"] == "worker processes" for r in results),
        "skipped": skipped,
        "python": sys.version.split()[0],
        "cases": results,
    }


# ----------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(data: dict[str, Any]) -> str:
    """Markdown for docs/reliability.md: the counts, then one row per case."""
    lines = [
        f"{data['total']} malformed inputs: {data['passed']} end as one line with exit status 2; "
        f"tracebacks: {data['tracebacks']}; silently accepted: {data['silently_accepted']}; "
        f"run folders left behind: {data['leftover_folders']}; raised inside worker "
        f"processes: {data['in_worker_processes']}."
        + (f" Not run on the machine that made this table: "
           f"{', '.join(s['id'] for s in data['skipped'])}." if data["skipped"] else ""),
        "",
        f"Training cases also pass `{' '.join(FAST)}` (left out below).",
        "",
        "| # | input | files / environment | message |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(data["cases"], 1):
        extra = "; ".join([*(f"{k}: {v!r}" for k, v in r["files"].items()),
                           *(f"{k}={v}" for k, v in r["env"].items())])
        msg = r["message"].removeprefix("scidl: error: ")
        mark = "" if not r["problems"] else " **(fails: " + "; ".join(r["problems"]) + ")**"
        argv = r["argv"].replace(" " + " ".join(FAST), "")
        lines.append(f"| {i} | `scidl {_cell(argv)}` | {_cell(extra)} | "
                     f"{_cell(msg)}{mark} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help="results JSON")
    ap.add_argument("--only", nargs="*", help="case ids to run")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.only or c.id in args.only]
    data = run_table(cases)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(render(data))
    return 0 if data["passed"] == data["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
