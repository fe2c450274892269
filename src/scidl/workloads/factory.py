"""A user's own task factory named where a workload name goes: ``module:attr``.

``scidl train mypkg.models:make_task`` (or ``scidl train models.py:make_task``) trains
the :class:`~scidl.workloads.base.Task` that ``make_task`` returns. ``attr`` may be

* a :class:`~scidl.workloads.base.Workload` subclass: used as is (its ``Config``,
  ``defaults`` and ``name``);
* a callable returning a Task: ``make_task(ctx)``, or ``make_task(cfg, ctx)`` where
  ``cfg`` is annotated with a pydantic model (a :class:`WorkloadConfig` subclass): that
  model is the factory's ``task.*`` settings.

The reference is resolved here only (the workload registry calls :func:`load_factory`):
the module is imported from ``sys.path`` with the current directory added, or from the
``.py`` file a path names. A run is named after the factory (:func:`factory_label`): the
Workload's ``name``, else the module's last part (``hf_gpt2`` for
``examples/hf_gpt2.py:make_task``), with ``.attr`` appended when ``attr`` is not
``make_task``. Every problem with a reference is a :class:`FactoryError`, one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from scidl.config import ConfigError
from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig

__all__ = ["FactoryError", "check_task", "factory_label", "is_reference", "load_factory",
           "reference_of"]

DEFAULT_ATTR = "make_task"


class FactoryError(ConfigError):
    """A ``module:attr`` task factory that cannot be used (one line naming the cause; the
    CLI prints it and exits with status 2)."""


def is_reference(name: str) -> bool:
    """Whether a workload name is a ``module:attr`` reference rather than a registered name."""
    return ":" in name


def _split(ref: str) -> tuple[str, str]:
    module, _, attr = ref.rpartition(":")
    if not module or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise FactoryError(f"workload {ref!r} is not of the form 'module:attr' "
                           "(e.g. mypkg.models:make_task or models.py:make_task)")
    return module, attr


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _import_file(module: str, ref: str) -> Any:
    path = Path(module).expanduser()
    if not path.is_file():
        raise FactoryError(f"workload {ref!r}: file {module} not found")
    path = path.resolve()
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) \
            and Path(str(loaded.__file__)).resolve() == path:
        return loaded
    if loaded is not None or not name.isidentifier():  # keep another module of that name
        name = f"scidl_user_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"workload {ref!r}: {module} cannot be imported as a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _import(module: str, ref: str) -> Any:
    if _is_path(module):
        return _import_file(module, ref)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # `scidl` (console script) lacks it
        sys.path.append(cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise FactoryError(f"workload {ref!r}: module {module!r} not found (looked in "
                               "the current directory and sys.path)") from None
        raise


def _attr(mod: Any, attr: str, ref: str) -> Any:
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"workload {ref!r}: module {mod.__name__!r} has no attribute "
                               f"{attr!r}")
        obj = getattr(obj, part)
    return obj


def _config_param(fn: Callable[..., Any]) -> tuple[str | None, type[BaseModel]]:
    """The parameter annotated with a pydantic model, and that model (else WorkloadConfig)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no typed config
        hints = {}
    for pname in inspect.signature(fn).parameters:
        ann = hints.get(pname)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return pname, ann
    return None, WorkloadConfig


def check_task(task: Any, source: str) -> Task:
    """``task`` if it is a Task, else a FactoryError naming ``source`` and what it returned."""
    if not isinstance(task, Task):
        raise FactoryError(f"workload {source!r} returned {type(task).__name__}, not a "
                           "scidl.Task")
    return task


def _call(fn: Callable[..., Any], cfg_param: str | None, cfg: Any, ctx: BuildContext) -> Any:
    params = list(inspect.signature(fn).parameters)
    if cfg_param is None:
        return fn(ctx) if params else fn()
    others = [p for p in params if p != cfg_param]
    kwargs = {cfg_param: cfg}
    if others:
        kwargs[others[0]] = ctx
    return fn(**kwargs)


def _workload_class(fn: Callable[..., Any], ref: str, label: str) -> type[Workload]:
    """A Workload class around a factory function (its Config from a typed parameter)."""
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        raise FactoryError(f"workload {ref!r}: cannot read the signature of {fn!r}") from None
    cfg_param, config = _config_param(fn)
    doc = (inspect.getdoc(fn) or "").strip().splitlines()

    class FactoryWorkload(Workload):
        name = label
        description = doc[0] if doc else f"task factory {ref}"
        Config = config  # type: ignore[assignment]
        defaults = dict(getattr(fn, "defaults", {}) or {})

        def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
            return check_task(_call(fn, cfg_param, cfg, ctx), ref)

    FactoryWorkload.__qualname__ = FactoryWorkload.__name__ = f"FactoryWorkload[{label}]"
    return FactoryWorkload


def factory_label(ref: str) -> str:
    """The name a run of ``ref`` is filed under (see the module docstring)."""
    module, attr = _split(ref)
    stem = Path(module).stem if _is_path(module) else module.rpartition(".")[2]
    return stem if attr == DEFAULT_ATTR else f"{stem}.{attr}"


def load_factory(ref: str) -> type[Workload]:
    """The Workload class ``ref`` (``module:attr``) names; FactoryError if it cannot be used."""
    module, attr = _split(ref)
    obj = _attr(_import(module, ref), attr, ref)
    if isinstance(obj, type) and issubclass(obj, Workload):
        if inspect.isabstract(obj):
            raise FactoryError(f"workload {ref!r}: {obj.__name__} does not implement build()")
        if not obj.name:  # file it under the reference's own name
            return type(obj.__name__, (obj,), {"name": factory_label(ref)})
        return obj
    if isinstance(obj, type) or not callable(obj):
        raise FactoryError(f"workload {ref!r}: {attr} ({type(obj).__name__}) is not a "
                           "function returning a scidl.Task nor a scidl.Workload subclass")
    return _workload_class(obj, ref, str(getattr(obj, "name", "") or factory_label(ref)))


def reference_of(fn: Callable[..., Any] | type) -> str:
    """``module:attr`` (or ``file.py:attr`` for a script's ``__main__``) naming ``fn``.

    Raises FactoryError when ``fn`` cannot be imported by name (a nested function, a
    lambda): spawned processes and ``scidl predict`` rebuild the task from the name.
    """
    qual = getattr(fn, "__qualname__", "")
    mod_name = getattr(fn, "__module__", None)
    if not qual or "<" in qual or not mod_name:
        raise FactoryError(f"{fn!r} cannot be named as module:attr: define the task factory "
                           "at the top level of a module")
    if mod_name == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path:
            raise FactoryError(f"{fn!r} is defined in an interactive session: define it in "
                               "a module or a .py file")
        return f"{Path(path).resolve()}:{qual}"
    mod = sys.modules.get(mod_name)
    path = getattr(mod, "__file__", None)
    if mod_name.startswith("scidl_user_") and path:
        return f"{Path(path).resolve()}:{qual}"
    return f"{mod_name}:{qual}"
