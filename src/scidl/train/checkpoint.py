"""Atomic, hashed, resumable checkpoints, written by every rank in parallel.

A checkpoint is a folder ``checkpoints/step_00000123/``::

    state.pt        shared state, written by rank 0: scheduler, progress, last evaluation,
                    and model + optimizer when every rank holds the same (data parallel)
    rank{r}.pt      rank r's own state, written by rank r: its RNG states, its
                    communication strategy's state (e.g. error-feedback residuals), and
                    its model + optimizer where ranks hold different parts (pipeline stages)
    manifest.json   SHA-256 and size of every file above, and the number of rank parts

:func:`save_sharded` (all ranks): rank 0 creates a temporary folder and tells the others
its name; every rank writes and fsyncs its own file into it; rank 0 gathers only the
file names, sizes and hashes (no state travels between ranks), writes the manifest and
renames the folder into place in one step, so a crash never leaves a half-written
checkpoint where a good one was. A rank reads back only ``state.pt`` and its own part.

With ``torch.distributed.checkpoint`` (DCP; ``checkpoint.format=dcp``, the default for
sharded runs), model and optimizer state live in ``dcp/`` inside the checkpoint folder:
``dcp.save`` on every rank between the "temporary folder" and "manifest" steps above,
each rank writing its own shards (DCP's ``__{r}_0.distcp`` files, ``.metadata`` from
rank 0; replicated tensors are written once). The ranks hash the ``dcp/`` files between
them, the manifest lists them too, and publishing, verification and fallback stay as
they are; ``state.pt`` then holds ``model``/``optimizer`` = None and ``format: "dcp"``.
With ``checkpoint.async_save`` the ``dcp/`` part is written in the background
(``dcp.async_save`` on a process group of its own) and :class:`PendingSave` publishes
it once written: before the next checkpoint and at the end of training. Loading goes
through ``dcp.load`` into this run's layout, so it reshards: another process count,
DDP <-> FSDP (:func:`load_dcp`). Per-rank RNG and strategy state stay in ``rank{r}.pt``.

Loading verifies the manifest: the files the loader needs must be listed (every rank
part the manifest announces, too), every listed file must match its size and hash, and
a file the manifest does not list makes the checkpoint suspect. A truncated, corrupted or
suspect checkpoint is reported and the previous good one is used; when none is usable,
resuming fails (:func:`resume_plan`) unless the caller allows a fresh start.
A full disk while writing raises :class:`DiskFullError` and keeps the previous checkpoint.

The best model (by the workload's headline metric) lives beside them in
``checkpoints/best_step_00000123/``: ``model.pt`` (the whole model's state dict, written
by rank 0 from the model it evaluated) and a ``manifest.json`` that also names the
metric, its value and direction. :func:`save_best` publishes it atomically (temporary
folder, fsync, rename) and then removes older ``best_step_*`` folders, so the newest one
that verifies is the best; rotation (``checkpoint.keep``) never touches it.
Files are read with ``torch.load(weights_only=True)``: no arbitrary code runs on load.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from scidl.runtime.files import atomic_write_bytes as atomic_write_bytes  # re-exported
from scidl.runtime.files import atomic_write_text as atomic_write_text  # re-exported
from scidl.runtime.files import create_temp_dir
from scidl.runtime.files import fsync_dir as _fsync_dir

MANIFEST = "manifest.json"
PREFIX = "step_"
BEST_PREFIX = "best_step_"  # the best model's folders (one, except after a crash mid-update)
BEST_MODEL = "model.pt"  # the whole model's state dict in a best folder
SET_ASIDE = "unusable_"  # prefix of checkpoints moved out of the way (kept for inspection)
SHARED_FILE = "state.pt"
DCP_DIR = "dcp"  # model and optimizer state written by torch.distributed.checkpoint
REQUIRED: tuple[str, ...] = (SHARED_FILE,)  # what Checkpoint.load needs by default
TRAINER_FILES: tuple[str, ...] = (SHARED_FILE, "rank0.pt")  # what the trainer's resume needs
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def rank_file(rank: int) -> str:
    """Name of rank ``rank``'s own part of a checkpoint."""
    return f"rank{rank}.pt"


class CheckpointError(RuntimeError):
    """No usable checkpoint could be found or a checkpoint could not be written."""


class DiskFullError(CheckpointError):
    """The disk filled up while a checkpoint was written (the previous one is kept)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk."""

    path: Path
    step: int

    def load(self, name: str = "state.pt") -> Any:
        return torch.load(self.path / name, map_location="cpu", weights_only=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def _write_object(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_part(folder: Path, name: str, obj: Any) -> dict[str, Any]:
    """Write ``obj`` to ``folder/name`` (fsync'ed); its manifest entry (size, SHA-256)."""
    p = folder / name
    _write_object(p, obj)
    return {"sha256": sha256_file(p), "bytes": p.stat().st_size}


def _publish(root: Path, tmp: Path, final: Path, manifest: dict[str, Any], keep: int) -> Path:
    """Write the manifest into ``tmp``, fsync, rename ``tmp`` to ``final``, prune."""
    with open(tmp / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. final == periodic): replace
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _prune(root, keep)
    return final


def write_failure(e: BaseException, root: Path, step: int) -> str:
    """A one-line reason for a failed checkpoint write."""
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        return disk_full_message(root, step_dir(root, step))
    if isinstance(e, CheckpointError):
        return str(e)
    return f"cannot write checkpoint step {step} in {root}: {e}"


def save_checkpoint(root: Path, step: int, files: dict[str, Any], keep: int = 3) -> Path:
    """Write ``{filename: object}`` as checkpoint ``step`` under ``root``; prune old ones.

    One process writes everything (the trainer uses :func:`save_sharded`).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = create_temp_dir(root, f".{final.name}.tmp-")
    try:
        entries = {name: write_part(tmp, name, obj) for name, obj in files.items()}
        return _publish(root, tmp, final, {"step": step, "files": entries}, keep)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFullError(disk_full_message(root, final)) from None
        raise


def save_sharded(root: Path, step: int, shared: Any, own: Any, keep: int = 3,
                 dcp_state: dict[str, Any] | None = None, async_group: Any = None,
                 ) -> Path | PendingSave:
    """Checkpoint ``step``: rank 0 writes ``shared`` (``state.pt``), every rank its ``own``
    part (``rank{r}.pt``) and, given ``dcp_state``, its shards of it through DCP
    (``dcp/``); published atomically by rank 0 (call on all ranks).

    With ``async_group`` (a process group for DCP's background collectives) the DCP part
    is written by ``dcp.async_save`` and a :class:`PendingSave` is returned: call its
    ``finish()`` on all ranks (it waits, hashes and publishes) before the next save.

    Collectives carry only the temporary folder's name, the files' sizes and hashes and
    the outcome. Any rank's failure (full disk, I/O error) ends the write on every rank
    with :class:`CheckpointError` naming the cause; the previous checkpoint is kept.
    """
    rank = dist.get_rank()
    final = step_dir(root, step)
    box: list[Any] = [None, None]  # (temporary folder, failure)
    if rank == 0:
        try:
            root.mkdir(parents=True, exist_ok=True)
            box[0] = str(create_temp_dir(root, f".{final.name}.tmp-"))
        except OSError as e:
            box[1] = write_failure(e, root, step)
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise CheckpointError(box[1])
    tmp = Path(box[0])
    entries: dict[str, Any] = {}
    failure = None
    try:
        entries[rank_file(rank)] = write_part(tmp, rank_file(rank), own)
        if rank == 0:
            entries[SHARED_FILE] = write_part(tmp, SHARED_FILE, shared)
    except Exception as e:  # reported to rank 0, so no rank is left waiting
        failure = write_failure(e, root, step)
    pending = PendingSave(root, step, tmp, final, keep, entries, failure)
    if dcp_state is not None:
        import torch.distributed.checkpoint as dcp

        try:
            if async_group is not None:
                pending.future = dcp.async_save(dcp_state, checkpoint_id=str(tmp / DCP_DIR),
                                                process_group=async_group)
                return pending
            dcp.save(dcp_state, checkpoint_id=str(tmp / DCP_DIR))
        except Exception as e:  # DCP raises on every rank when any rank failed
            pending.failure = pending.failure or write_failure(e, root, step)
    return pending.finish()


class PendingSave:
    """A checkpoint whose files are (being) written; :meth:`finish` publishes it (all ranks)."""

    def __init__(self, root: Path, step: int, tmp: Path, final: Path, keep: int,
                 entries: dict[str, Any], failure: str | None) -> None:
        self.root, self.step, self.tmp, self.final, self.keep = root, step, tmp, final, keep
        self.entries, self.failure = entries, failure
        self.future: Any = None  # dcp.async_save's future, when written in the background

    def finish(self) -> Path:
        """Wait for the background write, hash the DCP files (split over the ranks),
        publish on rank 0; raises :class:`CheckpointError` on every rank when any failed."""
        rank, world = dist.get_rank(), dist.get_world_size()
        if self.future is not None:
            try:
                self.future.result()
            except Exception as e:  # noqa: BLE001 - reported like any write failure
                self.failure = self.failure or write_failure(e, self.root, self.step)
            self.future = None
        folder = self.tmp / DCP_DIR
        if folder.is_dir() and self.failure is None:
            try:
                names = sorted(str(p.relative_to(self.tmp)) for p in folder.rglob("*") if p.is_file())
                for name in names[rank::world]:  # each rank hashes its share of the files
                    p = self.tmp / name
                    self.entries[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            except OSError as e:
                self.failure = write_failure(e, self.root, self.step)
        parts: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object((self.entries, self.failure), parts, dst=0)
        status: list[Any] = [None]
        if parts is not None:
            status[0] = _publish_parts(self.root, self.tmp, self.final, self.step, parts, self.keep)
        dist.broadcast_object_list(status, src=0)
        if status[0] is not None:
            raise CheckpointError(status[0])
        return self.final


def _publish_parts(root: Path, tmp: Path, final: Path, step: int, parts: list[Any],
                   keep: int) -> str | None:
    """On rank 0: publish the checkpoint the ranks wrote, or clean up; the failure or None."""
    failure = next((f for _, f in parts if f is not None), None)
    if failure is None:
        files: dict[str, Any] = {}
        for entries, _ in parts:
            files.update(entries)
        try:
            files = dict(sorted(files.items()))
            _publish(root, tmp, final, {"step": step, "ranks": len(parts), "files": files}, keep)
            return None
        except OSError as e:
            failure = write_failure(e, root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    return failure


def disk_full_message(root: Path, final: Path) -> str:
    kept = list_checkpoints(root)
    what = f"kept step {int(kept[-1].name[len(PREFIX):])}" if kept else "no earlier checkpoint"
    return f"no space left on device while writing checkpoint {final} ({what})"


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{PREFIX}*.tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, oldest first (unverified)."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(dirs, key=lambda p: p.name)


def verify_checkpoint(path: Path, required: Sequence[str] = REQUIRED) -> str | None:
    """Return None if ``path`` is intact and holds ``required``, else a one-line reason."""
    mf = path / MANIFEST
    if not mf.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(mf.read_text())
        entries = manifest["files"]
        if not isinstance(entries, dict):
            raise ValueError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    try:
        parts = [rank_file(r) for r in range(int(manifest.get("ranks", 0)))]
    except (TypeError, ValueError) as e:
        return f"unreadable manifest ({e})"
    unlisted = [n for n in dict.fromkeys([*required, *parts]) if n not in entries]
    if unlisted:
        return f"manifest does not list {', '.join(unlisted)}"
    extra = sorted(n for n in (str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())
                   if n != MANIFEST and n not in entries)
    if extra:
        return f"{', '.join(extra)} not in the manifest (suspect)"
    for name, meta in entries.items():
        f = path / name
        if not f.is_file():
            return f"missing file {name}"
        try:
            size, digest = int(meta["bytes"]), str(meta["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"unreadable manifest entry for {name}"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, manifest says {size} (truncated?)"
        if sha256_file(f) != digest:
            return f"{name} fails its SHA-256 check (corrupted)"
    return None


def _step_of(path: Path) -> int:
    return int(path.name.rpartition("_")[2])


def latest_good_checkpoint(root: Path, warn: bool = True,
                           required: Sequence[str] = REQUIRED) -> Checkpoint | None:
    """The newest checkpoint that passes verification; bad ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        reason = verify_checkpoint(path, required)
        if reason is None:
            return Checkpoint(path, _step_of(path))
        if warn:
            warnings.warn(
                f"checkpoint {path} is unusable: {reason}; trying the previous one",
                stacklevel=2,
            )
    return None


def resume_plan(root: Path, allow_none: bool = False, required: Sequence[str] = REQUIRED,
                warn: bool = True) -> list[Checkpoint]:
    """Checkpoints that verify, newest first, to try in turn when resuming.

    Unusable ones are reported (``warn``). Raises :class:`CheckpointError` when the list
    would be empty, unless ``allow_none`` (then the caller trains from step 0).
    """
    paths = list(reversed(list_checkpoints(root)))
    good, bad = [], []
    for path in paths:
        reason = verify_checkpoint(path, required)
        if reason is None:
            good.append(Checkpoint(path, _step_of(path)))
        else:
            bad.append(f"{path.name}: {reason}")
            if warn:
                warnings.warn(f"checkpoint {path} is unusable: {reason}", stacklevel=2)
    if good or allow_none:
        return good
    hint = "pass --restart-from-scratch to train from step 0"
    if not paths:
        raise CheckpointError(f"no checkpoint to resume from in {root}; {hint}")
    raise CheckpointError(f"none of the {len(paths)} checkpoint(s) in {root} is usable "
                          f"({'; '.join(bad)}); {hint}")


def set_aside_after(root: Path, step: int) -> list[Path]:
    """Rename checkpoints (and best models) newer than ``step`` to ``unusable_...``
    (kept, never loaded).

    Called after resuming from ``step``: a newer folder could not be used, and left in
    place it would shadow the run's new checkpoints when old ones are pruned; a newer
    best model belongs to the steps that will be trained again.
    """
    moved = []
    for path in [*list_checkpoints(root), *list_best(root)]:
        if _step_of(path) > step:
            dest = path.with_name(f"{SET_ASIDE}{path.name}-{uuid.uuid4().hex[:4]}")
            os.replace(path, dest)
            moved.append(dest)
    return moved


# ------------------------------------------------------------------------ DCP state


def resolve_format(fmt: str, shard: str) -> str:
    """``checkpoint.format``: ``dcp`` for sharded runs (preflight rejects ``torch`` there),
    else ``torch`` for ``auto``."""
    return "dcp" if shard != "none" else ("torch" if fmt == "auto" else fmt)


def state_layout(shared: dict[str, Any]) -> str:
    """How a trainer checkpoint holds model and optimizer: ``dcp`` (in ``dcp/``,
    reshardable), ``replicated`` (whole, in ``state.pt``: any process count) or
    ``per_rank`` (pipeline stages in ``rank{r}.pt``: the same process count only)."""
    if shared.get("format") == "dcp":
        return "dcp"
    return "replicated" if shared.get("model") is not None else "per_rank"


def strategy_state_in(part: dict[str, Any]) -> str:
    """What a rank part's communication-strategy state holds ("" when nothing), e.g.
    ``"residuals"`` for error feedback."""
    st = part.get("strategy")
    if not isinstance(st, dict):
        return ""
    return ", ".join(k for k, v in st.items()
                     if k not in ("step", "gen") and v not in (None, {}, [], 0))


def dcp_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Model and optimizer state keyed by parameter name (DTensor shards for FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd}


def load_dcp(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``path/dcp`` into ``model`` and ``optimizer`` in this run's layout (all
    ranks): DCP reads each rank's pieces from whichever shards hold them (resharding)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = dcp_state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path / DCP_DIR))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])


def model_state(good: Checkpoint) -> dict[str, Any] | None:
    """The whole model's state dict of a trainer checkpoint, in one process, without a
    process group: from ``state.pt``, or assembled from every shard in ``dcp/``; None
    where each rank kept its own stage (pipeline parts, see ``rank{r}.pt``)."""
    shared = good.load(SHARED_FILE)
    if not isinstance(shared, dict):
        return None
    if shared.get("format") != "dcp":
        return shared.get("model")
    # as torch's dcp_to_torch_save reads a checkpoint: every key, no template, no group
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    with warnings.catch_warnings():  # "assuming ... a single process": that is the intent
        warnings.simplefilter("ignore", UserWarning)
        _load_state_dict(state, storage_reader=FileSystemReader(str(good.path / DCP_DIR)),
                         planner=_EmptyStateDictLoadPlanner(keys={"model"}), no_dist=True)
    return state.get("model")


def load_full(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> None:
    """Load a whole (replicated, ``torch``-format) model and optimizer state into a
    sharded ``model`` (all ranks; each keeps its shard). The optimizer's state is keyed
    by position in its parameter groups, mapped to parameter names here."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    by_pos: dict[int, str] = {}
    for saved, now in zip(optim_sd["param_groups"], optimizer.param_groups, strict=True):
        by_pos.update({i: names[id(p)] for i, p in zip(saved["params"], now["params"], strict=True)})
    named: dict[str, Any] = {"state": {by_pos[int(i)]: v for i, v in optim_sd["state"].items()},
             "param_groups": [{**g, "params": [by_pos[i] for i in g["params"]]}
                              for g in optim_sd["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=named,
                   options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------ the best model


@dataclass(frozen=True)
class BestModel:
    """A verified best-model folder: its step and what made it the best."""

    path: Path
    step: int
    metric: str
    value: float
    higher_is_better: bool

    def load(self) -> dict[str, Any]:
        """The whole model's state dict (CPU tensors)."""
        state: dict[str, Any] = torch.load(self.path / BEST_MODEL, map_location="cpu",
                                           weights_only=True)
        return state


def best_dir(root: Path, step: int) -> Path:
    return root / f"{BEST_PREFIX}{step:08d}"


def list_best(root: Path) -> list[Path]:
    """Best-model folders under ``root``, oldest first (unverified)."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(BEST_PREFIX)]
    return sorted(dirs, key=lambda p: p.name)


def save_best(root: Path, step: int, model_state: dict[str, Any], metric: str, value: float,
              higher_is_better: bool) -> Path:
    """Publish ``model_state`` as the best model (one process): temporary folder, manifest
    (with the metric), rename into place, then remove older best folders. A crash at any
    point leaves the previous best or the new one intact."""
    root.mkdir(parents=True, exist_ok=True)
    final = best_dir(root, step)
    tmp = create_temp_dir(root, f".{final.name}.tmp-")
    try:
        entries = {BEST_MODEL: write_part(tmp, BEST_MODEL, model_state)}
        with open(tmp / MANIFEST, "w") as f:
            json.dump({"step": step, "files": entries, "metric": metric, "value": value,
                       "higher_is_better": higher_is_better}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # the same step evaluated twice (periodic and final)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFullError(f"no space left on device while writing the best model {final}"
                                " (the previous best is kept)") from None
        raise
    for old in list_best(root):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{BEST_PREFIX}*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_best(root: Path, warn: bool = True) -> BestModel | None:
    """The newest best-model folder that verifies (bad ones reported), or None."""
    for path in reversed(list_best(root)):
        reason = verify_checkpoint(path, (BEST_MODEL,))
        if reason is None:
            try:
                meta = json.loads((path / MANIFEST).read_text())
                return BestModel(path, _step_of(path), str(meta["metric"]),
                                 float(meta["value"]), bool(meta["higher_is_better"]))
            except (KeyError, TypeError, ValueError) as e:
                reason = f"unreadable manifest ({e})"
        if warn:
            warnings.warn(f"best model {path} is unusable: {reason}", stacklevel=2)
    return None
