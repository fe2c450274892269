"""Named registries: built-in entries imported on demand, runtime registration, plugins.

One :class:`Registry` per kind of thing chosen by name in a config (workloads, comm
strategies, optimizers, search methods). A registry knows three sources of entries:

* built-in entries, ``name → "module:attr"`` strings, imported only when the name is
  looked up (listing names imports nothing);
* ``register(name, obj)`` at run time (also usable as a decorator);
* third-party entries from installed packages: the ``importlib.metadata`` entry points
  of the registry's group (``scidl.workloads``, ``scidl.comm``, ``scidl.optim``,
  ``scidl.search``), read on the first lookup or listing and loaded on first use.

A name can be registered once: registering another object under a taken name is a
``ValueError``. Looking up an unknown name, or a plugin whose entry point fails to load,
raises :class:`RegistryError` (a ``KeyError`` whose message is one readable line with
the close matches and the choices), which the CLI prints as a one-line user error.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "RegistryError", "load_path"]

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name (the message lists close matches and every choice), or a registry
    entry that cannot be loaded (the message names the entry)."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else ""


def load_path(path: str) -> Any:
    """The object a ``"module:attr"`` string names (``attr`` may be dotted)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{path!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names → objects of type ``T`` from built-ins, :meth:`register` and entry points.

    Args:
        kind: what a name selects, as the user writes it (``"comm.strategy"``); used in
            error messages.
        builtin: ``name → "module:attr"`` of the built-in entries (imported lazily).
        group: entry-point group of third-party entries (None: no plugins).
    """

    def __init__(self, kind: str, builtin: Mapping[str, str] | None = None,
                 group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._paths: dict[str, str] = dict(builtin or {})
        self._objs: dict[str, T] = {}
        self._plugins: dict[str, EntryPoint] | None = None

    # ----------------------------------------------------------------- registration
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does.

        Registering the same object twice is a no-op; another object under a taken name
        (built-in, registered or a plugin's) is a ``ValueError``.
        """
        if obj is None:
            def deco(o: T) -> T:
                self.register(name, o)
                return o

            return deco
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string (got {name!r})")
        if self._objs.get(name) is obj:
            return obj
        if name in self._objs or name in self._paths or name in self._entry_points():
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._origin(name)})")
        self._objs[name] = obj
        return obj

    def _origin(self, name: str) -> str:
        if name in self._paths:
            return f"built-in {self._paths[name]}"
        if name in self._objs:
            o = self._objs[name]
            return f"by {getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)!s}"
        ep = self._entry_points()[name]
        return f"entry point {name} = {ep.value} of group {self.group}"

    # ----------------------------------------------------------------- lookup
    def _entry_points(self) -> dict[str, EntryPoint]:
        """The group's entry points (read once; plugins shadowed by a built-in are dropped)."""
        if self._plugins is None:
            found = {ep.name: ep for ep in entry_points(group=self.group)} if self.group else {}
            for name in sorted(found.keys() & self._paths.keys()):
                warnings.warn(f"entry point {name} = {found[name].value} of group "
                              f"{self.group} is ignored: {self.kind} {name!r} is built in",
                              stacklevel=3)
                del found[name]
            self._plugins = found
        return self._plugins

    def names(self) -> list[str]:
        """Every registered name, sorted (imports nothing but the entry-point metadata)."""
        return sorted({*self._paths, *self._objs, *self._entry_points()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._objs or name in self._paths or name in self._entry_points())

    def hint(self, name: str) -> str:
        """`` (did you mean a, b?)`` for a name close to registered ones, else ``""``."""
        close = difflib.get_close_matches(str(name), self.names(), n=3)
        return f" (did you mean {', '.join(close)}?)" if close else ""

    def suggest(self, name: str) -> str:
        """``'name' (did you mean …?); choices: …`` for an unregistered ``name``."""
        return f"{name!r}{self.hint(name)}; choices: {', '.join(self.names())}"

    def unknown(self, name: str) -> RegistryError:
        """The error for an unregistered ``name``: close matches, then every choice."""
        return RegistryError(f"unknown {self.kind} {self.suggest(name)}")

    def check(self, name: str) -> str:
        """``name`` if registered (nothing is imported), else :class:`RegistryError`."""
        if name not in self:
            raise self.unknown(name)
        return name

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported on first use)."""
        if name in self._objs:
            return self._objs[name]
        if name in self._paths:
            obj = self._load(name, self._paths[name], f"built-in {self._paths[name]}")
        elif name in self._entry_points():
            ep = self._entry_points()[name]
            obj = self._load(name, ep.value, f"entry point {name} = {ep.value} of group "
                             f"{self.group}", ep.load)
        else:
            raise self.unknown(name)
        self._objs[name] = obj
        return obj

    def _load(self, name: str, path: str, origin: str,
              loader: Callable[[], Any] | None = None) -> Any:
        try:
            return loader() if loader is not None else load_path(path)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RegistryError(f"{self.kind} {name!r} cannot be loaded from {origin}: "
                                f"{type(e).__name__}{': ' + first if first else ''}") from e
