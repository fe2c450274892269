"""What a trial does: turn sampled parameters into a run config, train it, measure it.

The default objective, :class:`TrainObjective`, runs the normal training path
(:func:`scidl.run`, multi-process when the trial's ``dist.nproc`` > 1) in a per-trial run
folder and returns an :class:`Outcome`. Objectives are pluggable: any class
``Obj(settings, **kwargs)`` with ``describe() -> (metric, higher_is_better, n_train)`` and
``__call__(trial, space) -> Outcome`` can be *registered* under a name
(:func:`register_objective`, or the ``scidl.search_objectives`` entry-point group of an
installed package), and a study names its objective by that name
(``SearchSettings.objective``: ``train``, ``toy``, ...).

The storage holds only the name, never an import path: every worker reads its study's
settings from the shared storage, and a worker that imported whatever ``module:Class`` the
storage named would run code chosen by anyone who can write to that database or file.
A name that is not registered is refused with :class:`ObjectiveError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from scidl.registry import Registry
from scidl.search.settings import SearchSettings
from scidl.search.space import SearchSpace

_MAXIMIZE = {"accuracy", "acc", "r2", "auc", "f1", "precision", "recall"}


@dataclass
class Outcome:
    """The result of one trial.

    Attributes:
        value: the searched metric (``SearchSettings.metric``) at the end of training.
        metrics: every final evaluation metric of the run.
        n_params: trainable parameters of the network.
        n_train: training samples (for the adjusted score).
        latency_ms: measured inference time per sample in milliseconds (None: not measured).
        run_dir: the trial's run folder.
        config: the resolved run config (a dict; ``scidl train --config`` reruns it).
    """

    value: float
    metrics: dict[str, float] = field(default_factory=dict)
    n_params: int = 0
    n_train: int | None = None
    latency_ms: float | None = None
    run_dir: str | None = None
    config: dict[str, Any] | None = None


class Objective(Protocol):
    def describe(self) -> tuple[str, bool, int | None]: ...

    def __call__(self, trial: optuna.Trial, space: SearchSpace) -> Outcome: ...


class ObjectiveError(ValueError):
    """A study names an objective that is not registered (message lists the registered)."""


ENTRY_POINT_GROUP = "scidl.search_objectives"

# Studies created before objectives had names stored these import paths; they name the
# same built-in classes, so they are read as the names.
_LEGACY: dict[str, str] = {
    "scidl.search.objective:TrainObjective": "train",
    "scidl.search.toy:ToyObjective": "toy",
}
OBJECTIVES: Registry[type] = Registry("search objective", {
    "train": "scidl.search.objective:TrainObjective",
    "toy": "scidl.search.toy:ToyObjective",
}, group=ENTRY_POINT_GROUP)


def register_objective(name: str) -> Callable[[type], type]:
    """Class decorator: make an objective class available to studies as ``name``.

    Registration is per process: workers started as separate processes must import the
    registering module too (use the ``scidl.search_objectives`` entry-point group of an
    installed package so that every worker sees it).
    """
    if not name or ":" in name:
        raise ValueError(f"objective name {name!r} must be non-empty and without ':'")
    return OBJECTIVES.register(name)


def objective_names() -> list[str]:
    """Every registered objective name, sorted."""
    return OBJECTIVES.names()


def resolve_objective(name: str) -> type:
    """The class registered as ``name`` (a built-in import path of old studies is accepted)."""
    name = _LEGACY.get(name, name)
    if name not in OBJECTIVES:
        raise ObjectiveError(
            f"objective {name!r} is not a registered search objective{OBJECTIVES.hint(name)}; "
            f"SciDL runs only registered objectives, never an import path from the storage: "
            f"{', '.join(objective_names())}"
        )
    return OBJECTIVES.get(name)


def load_objective(settings: SearchSettings) -> Objective:
    """Instantiate the registered objective ``settings.objective`` with ``settings``."""
    cls = resolve_objective(settings.objective)
    return cls(settings, **settings.objective_args)


def metric_direction(metric: str, headline: str, higher_is_better: bool) -> bool:
    """True when ``metric`` is maximised (the headline's own direction, else by name)."""
    if metric == headline:
        return higher_is_better
    return metric.lower() in _MAXIMIZE


def measure_latency_ms(task: Any, batch_size: int, repeats: int = 25) -> float:
    """Inference time per sample (ms) of ``task.model`` on a training batch.

    Times ``task.loss(model, batch)`` under ``torch.no_grad`` in eval mode with one thread
    (the forward pass dominates; the loss adds one reduction), after 3 warm-up calls, and
    keeps the *minimum* of ``repeats`` timings: on a shared machine the noise (preemption,
    cache pollution) only ever adds time, so the fastest repeat is the best estimate of the
    network's own cost.
    """
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(task.train_data, batch_size=batch_size, collate_fn=task.collate_fn)
    batch = next(iter(loader))
    n = len(batch[0]) if isinstance(batch, list | tuple) else batch_size
    model = task.model
    was_training = model.training
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(3):
                task.loss(model, batch)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                task.loss(model, batch)
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return 1e3 * min(times) / max(n, 1)


def can_report(trial: optuna.Trial) -> bool:
    """Intermediate values (pruning) exist only for single-objective studies."""
    return len(trial.study.directions) == 1


class _PruneReporter:
    """Wraps ``task.evaluate``: reports each evaluation to the trial, raises when pruned."""

    def __init__(self, evaluate: Any, trial: optuna.Trial, metric: str) -> None:
        self.evaluate, self.trial, self.metric = evaluate, trial, metric
        self.step = 0
        self.pruned = False

    def __call__(self, model: Any, data: Any) -> dict[str, float]:
        out = self.evaluate(model, data)
        value = out.get(self.metric)
        if value is not None and can_report(self.trial):
            self.trial.report(float(value), self.step)
            self.step += 1
            if self.trial.should_prune():
                self.pruned = True
                raise optuna.TrialPruned(f"pruned at evaluation {self.step}")
        return out


class TrainObjective:
    """Train the workload with the trial's overrides through :func:`scidl.run`.

    Pruning (intermediate values = the metric at each evaluation) works for in-process
    trials (``dist.nproc == 1``); multi-process trials report only their final value.
    """

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings

    def config(self, overrides: dict[str, Any], run_dir: str | None = None) -> Any:
        """The resolved run config of a trial with nested ``overrides``.

        Precedence (later wins): workload defaults, the space's ``fixed`` entries, the
        user's base overrides (``--config``, ``KEY=VALUE``), the sampled parameters.
        """
        from scidl.config import _deep_merge, load_config
        from scidl.search.space import build_space

        fixed = build_space(self.settings.space).fixed_overrides() if self.settings.space else {}
        extra = _deep_merge(_deep_merge(fixed, self.settings.base), overrides)
        if run_dir is not None:
            extra = _deep_merge(extra, {"log": {"run_dir": run_dir}})
        return load_config(self.settings.workload, extra=extra)

    def _build(self, cfg: Any) -> Any:
        from scidl.runtime.seed import seed_everything
        from scidl.workloads import get_workload
        from scidl.workloads.base import BuildContext

        seed_everything(cfg.train.seed)
        ctx = BuildContext(seed=cfg.train.seed, data_dir=Path(cfg.log.root) / ".data")
        return get_workload(cfg.workload).build(cfg.task_config(), ctx)

    def describe(self) -> tuple[str, bool, int | None]:
        """(headline metric, higher_is_better, training samples) of the base config."""
        task = self._build(self.config({}))
        return task.headline, task.higher_is_better, len(task.train_data)

    def __call__(self, trial: optuna.Trial, space: SearchSpace) -> Outcome:
        import scidl

        params = space.suggest(trial)
        run_dir = Path(self.settings.out) / "trials" / f"{trial.number:05d}"
        cfg = self.config(space.overrides(params, fixed=False), run_dir=str(run_dir))
        cfg = cfg.model_copy(update={"log": cfg.log.model_copy(update={"progress": False})})
        metric = self.settings.metric
        holder: dict[str, Any] = {}

        def factory(ctx: Any) -> Any:  # in-process only (nproc == 1)
            from scidl.workloads import get_workload

            task = get_workload(cfg.workload).build(cfg.task_config(), ctx)
            task.evaluate = holder["reporter"] = _PruneReporter(task.evaluate, trial, metric)
            holder["task"] = task
            return task

        in_process = cfg.dist.nproc == 1
        try:
            result = scidl.run(cfg, task_factory=factory if in_process else None)
        except Exception:
            if holder.get("reporter") is not None and holder["reporter"].pruned:
                raise optuna.TrialPruned() from None
            raise
        summary = result.summary
        final = {k: float(v) for k, v in (summary.get("final_eval") or {}).items()}
        if metric not in final:
            raise RuntimeError(f"run finished without metric {metric!r} (has: {sorted(final)})")
        task = holder.get("task") or self._build(cfg)  # trained model if in-process
        from scidl.workloads.common.nets import count_parameters

        return Outcome(
            value=final[metric],
            metrics=final,
            n_params=count_parameters(task.model),
            n_train=len(task.train_data),
            latency_ms=measure_latency_ms(task, self.settings.latency_batch),
            run_dir=str(result.run_dir),
            config=cfg.to_dict(),
        )
