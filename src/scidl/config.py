"""Run configuration: pydantic models, YAML load/dump, ``key=value`` overrides.

Resolution order (later wins): built-in defaults → the workload's ``defaults`` → a YAML
file → command-line overrides with dotted paths (``train.batch_size=64``). Every error
names the offending key and the valid choices; :class:`ConfigError` carries a one-line,
traceback-free message for the CLI.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from scidl.comm.config import CommConfig
from scidl.optim.config import OptimConfig, PhaseConfig, parse_phases
from scidl.parallel.config import ParallelConfig


class ConfigError(ValueError):
    """A user error in a config file or override; the message is meant for humans."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(_Section):
    """The training budget and loop behaviour."""

    epochs: int = Field(10, ge=0, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps to train (overrides epochs)")
    batch_size: int = Field(32, ge=1, description="per-rank batch size (samples per micro-step)")
    global_batch_size: int | None = Field(
        None, ge=1, description="if set: batch_size = global_batch_size / (world * grad_accum)"
    )
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: epoch ends, at most ~20 a run)")
    log_every: int = Field(10, ge=1, description="write metrics every N steps")
    early_stop_patience: int | None = Field(
        None, ge=1,
        description="stop after this many evaluations without the headline metric improving "
                    "by more than early_stop_min_delta on the best so far (None: never)")
    early_stop_min_delta: float = Field(
        0.0, ge=0, description="smallest change of the headline metric that counts as an "
                               "improvement for early stopping")
    clip_grad_norm: float | None = Field(None, gt=0, description="max global grad norm")
    precision: Literal["fp32", "bf16", "fp64"] = Field(
        "fp32", description="bf16 = autocast forward; fp64 = model, data and optimizer in float64")
    phases: list[PhaseConfig] = Field(
        default_factory=list,
        description="optimizer phases run in order, e.g. [{optim: adam, steps: 1000}, {optim: "
                    "lbfgs, steps: 50}] or adam:1000,lbfgs:50; the budget is their steps "
                    "(train.max_steps caps it); empty: one phase of optim.name")
    skip_nonfinite: bool = Field(True, description="skip steps whose gradients are NaN/Inf")
    # 0.1: a healthy run skips (almost) no steps; a tenth of the budget skipped is already
    # a different experiment and, in practice, divergence (the rest of it gets skipped
    # too). The run stops as soon as the count passes this fraction of the budget.
    max_skipped_fraction: float = Field(
        0.1, ge=0, le=1,
        description="fail the run once more than this fraction of its steps were skipped "
                    "(non-finite); a run whose every step is skipped always fails",
    )
    seed: int = Field(0, description="seed for model init, data generation and data order")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms")
    drop_last: bool = Field(True, description="drop the last incomplete batch of each epoch")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes reading the "
                                                  "training data (0: read in the training process)")
    pin_memory: bool = Field(False, description="page-locked host batches for faster copies to "
                                                "the GPU (ignored on CPU)")
    persistent_workers: bool = Field(False, description="keep the loader's workers alive across "
                                                        "epochs (needs train.num_workers > 0)")
    prefetch_factor: int | None = Field(None, ge=1, description="batches each worker loads ahead "
                                        "(needs train.num_workers > 0; default 2)")

    @model_validator(mode="after")
    def _loader_options(self) -> TrainConfig:
        if self.num_workers == 0:
            for key in ("prefetch_factor", "persistent_workers"):
                if getattr(self, key):
                    raise PydanticCustomError(
                        "scidl_key", f"train.{key} needs train.num_workers > 0 (got 0)")
        return self

    @field_validator("phases", mode="before")
    @classmethod
    def _phases_from_text(cls, v: object) -> object:
        """``adam:1000,lbfgs:50`` (the command-line form) or null: see :func:`parse_phases`."""
        return [] if v is None else parse_phases(v)


class DataConfig(_Section):
    """How training data read from files is sharded and where it is read from."""

    shard_by: Literal["index", "file"] = Field(
        "index", description="index: every rank draws samples from all files; file: each rank "
                             "reads only its own files (needs data read from files)")
    stage_dir: str | None = Field(
        None, description="copy the files this rank reads to this (node-local) folder before "
                          "training and read the copies (needs data read from files)")
    read_ahead: Literal["none", "thread"] = Field(
        "none", description="thread: read the next training batches in a background thread of "
                            "the training process instead of worker processes (needs "
                            "train.num_workers=0)")


class DistConfig(_Section):
    """Processes and backend."""

    nproc: int = Field(1, ge=1, description="local processes started by `scidl train`")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on CUDA")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="compute device")
    max_restarts: int = Field(0, ge=0, description="elastic agent restarts on failure")
    timeout_s: float = Field(600.0, gt=0, description="collective timeout in seconds")
    stall_timeout_s: float = Field(
        120.0, gt=0, allow_inf_nan=False,
        description="a rank with no heartbeat for this many seconds is reported and the job fails "
                    "(or restarts under max_restarts)")
    threads_per_proc: int | None = Field(
        None, ge=1,
        description="torch threads per process (default: the cores this process may use, "
                    "shared among the local processes, fewer when the machine is loaded)")
    bind_cores: bool | Literal["auto"] = Field(
        "auto", description="bind each local process to cores of its own: auto when the "
                            "processes' threads fill this machine's cores exactly, true "
                            "whenever there are several, false never (the OS schedules)")


class CheckpointConfig(_Section):
    """Checkpoints: atomic, hashed, resumable."""

    every_steps: int = Field(0, ge=0, description="checkpoint every N steps (0: epoch ends, at most ~20 a run)")
    keep: int = Field(3, ge=1, description="checkpoints kept on disk")
    final: bool = Field(True, description="write a checkpoint at the end")
    best: bool = Field(True, description="keep the model of the best evaluation of the headline "
                                         "metric in checkpoints/best_step_*/")
    format: Literal["auto", "torch", "dcp"] = Field(
        "auto", description="how model and optimizer state are written: dcp (torch.distributed."
                            "checkpoint, each rank its own shards, reshardable on load), torch "
                            "(state.pt / rank{r}.pt files), auto (dcp for sharded runs, else torch)")
    async_save: bool = Field(False, description="write the dcp part in the background "
                                                "(dcp.async_save); finished before the next "
                                                "checkpoint and at exit")


class LogConfig(_Section):
    """Where results go and how progress is shown."""

    root: str = Field("runs", description="parent of run folders")
    run_dir: str | None = Field(None, description="explicit run folder (default: timestamped)")
    tensorboard: bool = Field(True, description="write TensorBoard event files")
    progress: bool = Field(
        True, description="progress on rank 0: a bar in a terminal, plain lines otherwise"
    )
    pictures: bool = Field(
        True, description="after training, draw the workload's own pictures of the trained "
                          "model (solution, error field, masks) into RUN_DIR/pictures/",
    )
    every_s: float = Field(
        30.0, ge=0,
        description="seconds between plain progress lines when stdout is not a terminal "
                    "(batch logs, pipes); 0: none",
    )
    mlflow: bool | str = Field(
        False, description="MLflow tracking: true = an embedded store under log.root "
                           "(mlflow.db, mlartifacts/), or a tracking URI (http://host:5000, "
                           "sqlite:///path); needs scidl[tracking]",
    )
    mlflow_experiment: str | None = Field(
        None, description="MLflow experiment name (default: the workload's name)")
    loggers: list[str] = Field(
        default_factory=list,
        description="more metrics destinations: registered names (csv) or module:attr classes",
    )


class RunConfig(_Section):
    """Everything that defines a run. ``task`` holds the workload's own settings."""

    workload: str = Field("burgers", description="registered workload name, or a task "
                          "factory as module:attr")
    task: dict[str, Any] = Field(default_factory=dict, description="workload settings")
    train: TrainConfig = Field(default_factory=TrainConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    comm: CommConfig = Field(default_factory=CommConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    dist: DistConfig = Field(default_factory=DistConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    def task_config(self) -> Any:
        """The validated workload config object for ``self.task``."""
        from scidl.workloads import get_workload

        wl = get_workload(self.workload)
        return _validate(wl.Config, self.task, prefix="task")

    def workload_label(self) -> str:
        """The name this run is filed under (run folder, summary, output): the workload
        name, or a task factory's own name when ``workload`` is ``module:attr``."""
        from scidl.workloads import workload_label

        return workload_label(self.workload)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- helpers


def _deep_merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_sources(base: dict[str, Any], new: dict[str, Any], base_name: str, new_name: str,
                  prefix: str = "") -> dict[str, Any]:
    """:func:`_deep_merge`, but a section (mapping) meeting a plain value is a ConfigError.

    ``dist: 4`` in a file and ``--nproc 2`` on the command line must not silently become
    ``dist: {nproc: 2}``; nor may ``dist=4`` replace a file's ``dist:`` section. An empty
    section (``dist:`` with nothing under it, read as null) merges as an empty mapping.
    """
    out = copy.deepcopy(base)
    for k, v in new.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            out[k] = merge_sources(old, v, base_name, new_name, path)
        elif isinstance(v, dict) != isinstance(old, dict) and old is not None and v is not None \
                and k in out:
            sect, val = (new_name, base_name) if isinstance(v, dict) else (base_name, new_name)
            got = old if isinstance(v, dict) else v
            raise ConfigError(
                f"'{path}' is a section (key: value pairs) in {sect} but a single value "
                f"({got!r}) in {val}"
            )
        else:
            out[k] = copy.deepcopy(v)
    return out


def nonfinite_key(data: Any, prefix: str = "") -> str | None:
    """Dotted path of the first NaN/Inf float in nested dicts/lists (None: all finite)."""
    if isinstance(data, float):
        return None if math.isfinite(data) else prefix
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return None
    for k, v in items:
        found = nonfinite_key(v, f"{prefix}.{k}" if prefix else str(k))
        if found is not None:
            return found
    return None


def _get_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, (list, tuple)) else data[part]
    return data


def check_finite(data: dict[str, Any], prefix: str = "") -> None:
    """ConfigError naming the first NaN/Inf value (``optim.lr=inf`` would train to NaN)."""
    key = nonfinite_key(data)
    if key is not None:
        path = f"{prefix}.{key}" if prefix else key
        raise ConfigError(f"invalid value for '{path}': must be a finite number "
                          f"(got {_get_path(data, key)!r})")


def _valid_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        keys.append(path)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, path))
    return keys


def _format_error(err: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    if e["type"] == "scidl_key":  # a check across keys: its message names them
        return str(e["msg"])
    loc = ".".join(str(p) for p in e["loc"])
    path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    if e["type"] == "extra_forbidden":
        valid = _valid_keys(model, prefix)
        close = difflib.get_close_matches(path, valid, n=3, cutoff=0.5)
        if not close:  # suggest siblings of the unknown key
            parent = path.rpartition(".")[0]
            close = [k for k in valid if k.rpartition(".")[0] == parent][:8]
        if not close:
            return f"unknown config key '{path}': '{parent or prefix}' takes no keys here"
        return f"unknown config key '{path}'; valid keys near it: {', '.join(close)}"
    return f"invalid value for '{path}': {e['msg']} (got {e.get('input')!r})"


def _validate(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> Any:
    try:
        obj = model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, prefix, model)) from None
    check_finite(obj.model_dump(mode="python"), prefix)
    return obj


def parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (``1e-3`` → float, ``[1,2]`` → list).

    ``on``/``off``/``yes``/``no`` stay strings (YAML 1.1 would make them booleans): choice
    fields such as ``optim.aa_ma=on`` mean the word, and pydantic still reads them as
    booleans where a field is a bool.
    """
    if text.strip().lower() in ("on", "off", "yes", "no", "y", "n"):
        return text.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        if text.strip().lower() in ("none", "null"):
            return None
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def overrides_to_dict(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; malformed items raise ConfigError."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = out
        parts = key.strip().split(".")
        if any(not p.strip() for p in parts):
            raise ConfigError(f"override {item!r}: the key {key.strip()!r} has an empty part")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        value = parse_value(raw)
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"override {item!r} replaces the section '{key.strip()}' set by "
                              "an earlier override with a single value")
        node[parts[-1]] = value
    return out


def load_config(
    workload: str | Callable[..., Any] | None = None,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a run config from defaults, workload defaults, YAML and overrides.

    Args:
        workload: workload name (overrides the file's ``workload`` key if given): a
            registered name, a task factory as ``"module:attr"``, or the factory itself
            (a top-level function returning a Task, or a Workload subclass).
        path: optional YAML file.
        overrides: ``dotted.key=value`` strings.
        extra: a nested dict applied last (CLI flags such as ``--nproc``).
    """
    from scidl.workloads import get_workload

    data: dict[str, Any] = {}
    if path is not None:
        data = _read_config_file(Path(path))
        if not workload and not data.get("workload"):
            raise ConfigError(f"config file {path} names no workload: add 'workload: NAME' "
                              "to it or name the workload on the command line")
    cli = merge_sources(overrides_to_dict(overrides or []), extra or {}, "the overrides",
                        "the command-line flags")
    if _explicit_run_dir(cli) is None:
        data = _forget_used_run_dir(data)
    user = merge_sources(data, cli, f"config file {path}", "the command line")
    name = workload or user.get("workload") or RunConfig.model_fields["workload"].default
    if callable(name):  # a task factory or Workload class passed from Python
        from scidl.workloads.factory import reference_of

        name = reference_of(name)
    if not isinstance(name, str):
        raise ConfigError(f"invalid value for 'workload': a workload name (got {name!r})")
    try:
        wl = get_workload(name)
    except KeyError as e:
        msg = str(e.args[0] if e.args else e)
        if msg.startswith("unknown workload"):
            msg += ", or a task factory as module:attr"
        raise ConfigError(msg) from None
    merged = _deep_merge(copy.deepcopy(wl.defaults), user)
    merged["workload"] = name
    task_data = merged.get("task", {})
    if task_data is None:
        task_data = {}
    if not isinstance(task_data, dict):
        raise ConfigError(f"invalid value for 'task': a section of {name}'s settings "
                          f"(got {task_data!r})")
    # Fill the task section with the workload's full defaults so config.yaml is complete.
    task = _validate(wl.Config, task_data, prefix="task")
    merged["task"] = task.model_dump(mode="json")
    cfg = _validate(RunConfig, merged)
    _check_registered(cfg)
    _check_phases_used(cfg, user)
    _check_read_ahead(cfg)
    return cfg


def _check_read_ahead(cfg: RunConfig) -> None:
    if cfg.data.read_ahead == "thread" and cfg.train.num_workers:
        raise ConfigError("data.read_ahead=thread reads in the training process: it needs "
                          f"train.num_workers=0 (got {cfg.train.num_workers})")


def _check_phases_used(cfg: RunConfig, user: dict[str, Any]) -> None:
    """With ``train.phases`` (a workload's defaults may set them) the budget and the
    optimizers come from the phases: a ``train.epochs`` or an ``optim.name`` the user gave
    that they override is a ConfigError, not silently ignored."""
    phases = cfg.train.phases
    train, optim = user.get("train"), user.get("optim")
    if not phases or (isinstance(train, dict) and "phases" in train):
        return
    listed = ", ".join(f"{p.optim} {p.steps}" for p in phases)
    hint = (f"this run trains in phases (train.phases: {listed}) from the workload's "
            "defaults; set train.phases (train.phases=none: one optimizer for train.epochs)")
    if isinstance(train, dict) and "epochs" in train:
        raise ConfigError(f"train.epochs does not apply: {hint}, or cap the phases with "
                          "train.max_steps")
    if isinstance(optim, dict) and "name" in optim and optim["name"] not in {p.optim for p in phases}:
        raise ConfigError(f"optim.name={optim['name']} does not apply: {hint}")


def _read_config_file(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" if not p.exists()
                          else f"config file {p} is not a file")
    try:
        loaded = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {p} is not valid YAML: {first}") from None
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from None
    if loaded is None:
        raise ConfigError(f"config file {p} is empty")
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return loaded


def _explicit_run_dir(data: dict[str, Any]) -> Any:
    log = data.get("log")
    return log.get("run_dir") if isinstance(log, dict) else None


def folder_in_use(path: str | Path) -> bool:
    """True if ``path`` exists and is not an empty folder (a run may not start there)."""
    p = Path(path)
    if not p.exists():
        return False
    return not p.is_dir() or any(p.iterdir())


def _forget_used_run_dir(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config (``config.yaml``, a search's ``best.yaml``) records its run folder.

    Loading it for a new run must not write into that run: ``log.run_dir`` from a file
    is kept only if it names a folder that does not exist yet or is empty.
    """
    run_dir = _explicit_run_dir(data)
    if not isinstance(run_dir, str) or not folder_in_use(run_dir):
        return data
    out = copy.deepcopy(data)
    out["log"]["run_dir"] = None
    return out


def _check_registered(cfg: RunConfig) -> None:
    """``optim.name`` fails at load time, with the choices (``comm.strategy`` and
    ``comm.lag_inner`` are checked by :class:`CommConfig` itself)."""
    from scidl.optim.registry import OPTIMIZERS

    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError(f"invalid value for 'optim.name': {OPTIMIZERS.suggest(cfg.optim.name)}")
    for i, phase in enumerate(cfg.train.phases):
        if phase.optim not in OPTIMIZERS:
            raise ConfigError(f"invalid value for 'train.phases.{i}.optim': "
                              f"{OPTIMIZERS.suggest(phase.optim)}")
    _check_precision(cfg)
    _check_comm_owns_optimizer(cfg)


def _check_comm_owns_optimizer(cfg: RunConfig) -> None:
    """A strategy that applies momentum/Adam itself (``dgc``, ``topk_adam``) needs plain
    SGD as the optimizer: double momentum, or clipping its update, is a ConfigError."""
    from scidl.comm.registry import get_strategy_class

    c = cfg.comm
    name = c.lag_inner if c.strategy == "lag" else c.strategy
    owns = get_strategy_class(name).owns_optimizer_state
    if owns is None:
        return
    optims = [cfg.optim.name, *(ph.optim for ph in cfg.train.phases)]
    if any(o != "sgd" for o in optims) or cfg.optim.momentum != 0:
        raise ConfigError(f"comm.strategy={name} applies {owns} itself: set optim.name=sgd "
                          f"optim.momentum=0 (got optim.name={','.join(optims)} "
                          f"optim.momentum={cfg.optim.momentum})")
    if cfg.train.clip_grad_norm is not None:
        raise ConfigError(f"train.clip_grad_norm would clip the update comm.strategy={name} "
                          "returns, not the gradient: unset it (dgc: comm.clip_norm clips "
                          "each rank's gradient)")


#: gradient reductions that keep every bit of a float64 gradient
LOSSLESS_COMM = ("dense", "grouped", "hierarchical")


def _check_precision(cfg: RunConfig) -> None:
    """``train.precision=fp64`` where it cannot apply is a ConfigError naming the key."""
    if cfg.train.precision != "fp64":
        return
    if cfg.parallel.pipeline_stages > 1:
        raise ConfigError("train.precision=fp64 is not supported with pipeline stages "
                          f"(parallel.pipeline_stages={cfg.parallel.pipeline_stages}); use 1")
    if cfg.comm.strategy not in LOSSLESS_COMM:
        raise ConfigError(f"train.precision=fp64 needs a lossless gradient reduction "
                          f"(comm.strategy one of {', '.join(LOSSLESS_COMM)}), not "
                          f"comm.strategy={cfg.comm.strategy}")


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from scidl.runtime.files import atomic_write_text

    atomic_write_text(Path(path), cfg.to_yaml())
