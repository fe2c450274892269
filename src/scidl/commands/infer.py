"""``scidl infer RUN_DIR --input FILE --output FILE``: run a trained model on new inputs.

The model is rebuilt from the run's ``config.yaml`` and loaded with the run's best
weights (``checkpoints/best_step_*``, kept by the headline metric), or, when the run
kept no best model, the newest checkpoint that verifies (the whole model from
``state.pt``, or the stages of a pipelined run assembled from their ``rank{r}.pt``
parts). Inputs come from a NumPy ``.npy``/``.npz`` or an HDF5 ``.h5``/``.hdf5`` file (one
sample per row, each of the shape the workload's model takes); outputs are written in
input order to ``--output`` in the format its suffix names (``.npz``/HDF5: an array
called ``outputs``). ``--nproc N`` splits the rows into N contiguous shares, one per
process of a gloo group; rank 0 gathers the outputs and writes the file.
"""

from __future__ import annotations

import argparse
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAME = "infer"
HELP = "run a trained model (its best weights) on inputs from a .npy/.npz/.h5 file"

NUMPY_SUFFIXES = (".npy", ".npz")
HDF5_SUFFIXES = (".h5", ".hdf5")
OUTPUT_NAME = "outputs"  # the array's name in .npz / HDF5 outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (with config.yaml and checkpoints/)")
    p.add_argument("--input", "-i", required=True, help="inputs: .npy, .npz or .h5/.hdf5 (one sample per row)")
    p.add_argument("--output", "-o", required=True,
                   help="where the outputs go: .npy, .npz or .h5/.hdf5 (written in input order)")
    p.add_argument("--dataset", help="the array to read from a .npz or HDF5 input "
                                     "(default: its only array)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (default: 256)")
    p.add_argument("--nproc", type=int, default=1, help="processes sharing the inputs (default: 1)")


# ------------------------------------------------------------------------------ weights


@dataclass(frozen=True)
class Weights:
    """The whole model's state dict and where it came from (for the log line)."""

    state: dict[str, Any]
    source: str


def find_weights(run_dir: Path, pipeline_stages: int = 1) -> Weights:
    """The best model's weights, else those of the newest checkpoint that verifies.

    Raises UserError when the run folder holds neither.
    """
    from scidl.cli import UserError
    from scidl.train import checkpoint as ckpt

    root = run_dir / "checkpoints"
    best = ckpt.latest_best(root)
    if best is not None:
        return Weights(best.load(), f"best model ({best.metric} {best.value:.4g} at step {best.step})")
    good = ckpt.latest_good_checkpoint(root, warn=True, required=ckpt.TRAINER_FILES)
    if good is None:
        raise UserError(f"{run_dir} has no usable checkpoint (no checkpoints/best_step_* or "
                        "checkpoints/step_* that verifies): train the run first")
    model = ckpt.model_state(good)  # state.pt, or the shards of a dcp checkpoint
    if model is None:  # pipeline stages: replica 0's stages are ranks 0..stages-1
        model = {}
        for r in range(pipeline_stages):
            part = good.load(ckpt.rank_file(r))
            model.update(part.get("model") or {})
    return Weights(model, f"the newest checkpoint (step {good.step}; the run kept no best model)")


# ------------------------------------------------------------------------------- files


def _suffix(path: Path, what: str) -> str:
    from scidl.cli import UserError

    suffix = path.suffix.lower()
    if suffix not in NUMPY_SUFFIXES + HDF5_SUFFIXES:
        raise UserError(f"{what} {path}: unknown format {suffix or '(no suffix)'!r}; "
                        "use .npy, .npz, .h5 or .hdf5")
    return suffix


def _h5py() -> Any:
    from scidl.cli import UserError

    try:
        import h5py
    except ImportError:
        raise UserError("HDF5 files need the h5py package (pip install h5py)") from None
    return h5py


def _only(names: list[str], path: Path, dataset: str | None) -> str:
    from scidl.cli import UserError

    if dataset is not None:
        if dataset not in names:
            raise UserError(f"--input {path} has no array {dataset!r} (it has: {', '.join(names) or 'none'})")
        return dataset
    if len(names) != 1:
        raise UserError(f"--input {path} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                        "name one with --dataset")
    return names[0]


def input_shape(path: Path, dataset: str | None) -> tuple[int, ...]:
    """The shape of the input array (UserError for a missing file or array)."""
    from scidl.cli import UserError

    if not path.is_file():
        raise UserError(f"--input {path}: no such file")
    suffix = _suffix(path, "--input")
    try:
        if suffix == ".npy":
            if dataset is not None:
                raise UserError("--dataset applies to .npz and HDF5 inputs, not .npy")
            return tuple(np.load(path, mmap_mode="r").shape)
        if suffix == ".npz":
            with np.load(path) as z:
                return tuple(z[_only(list(z.files), path, dataset)].shape)
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            return tuple(f[_only(_h5_arrays(f, h5py), path, dataset)].shape)
    except (OSError, ValueError) as e:
        raise UserError(f"--input {path} cannot be read: {str(e).splitlines()[0]}") from None


def read_rows(path: Path, dataset: str | None, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the input array (only those are read where the format allows)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.array(np.load(path, mmap_mode="r")[start:stop])  # a writable copy of the rows
    if suffix == ".npz":
        with np.load(path) as z:
            return np.asarray(z[_only(list(z.files), path, dataset)][start:stop])
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        return np.asarray(f[_only(_h5_arrays(f, h5py), path, dataset)][start:stop])


def _h5_arrays(f: Any, h5py: Any) -> list[str]:
    """Names of the arrays at the top level of an open HDF5 file."""
    return [k for k in f if isinstance(f[k], h5py.Dataset)]


def write_outputs(path: Path, out: np.ndarray) -> None:
    """Write ``out`` to ``path`` in the format its suffix names, atomically."""
    from scidl.runtime.files import atomic_write_bytes, create_temp_file

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        buf = io.BytesIO()
        if suffix == ".npy":
            np.save(buf, out)
        else:
            np.savez(buf, outputs=out)  # the array is called OUTPUT_NAME
        atomic_write_bytes(path, buf.getvalue())
        return
    h5py = _h5py()
    fd, tmp = create_temp_file(path.parent, f".{path.name}.")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(OUTPUT_NAME, data=out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------- model


def sample_input(task: Any) -> Any:
    """One training sample's model input (the ``x`` of an ``(x, y)`` sample), or None."""
    import torch

    try:
        item = task.train_data[0]
    except Exception:  # noqa: BLE001 - datasets that cannot be indexed
        return None
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    return item if isinstance(item, torch.Tensor) else None


def load_model(run_dir: Path) -> tuple[Any, Any, str]:
    """(model in eval mode with the run's weights, a sample input, where the weights came from)."""
    from scidl.cli import UserError
    from scidl.config import load_config
    from scidl.train.api import build_task
    from scidl.workloads.base import BuildContext

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir}: no config.yaml there (not a run folder?)")
    cfg = load_config(None, config)
    weights = find_weights(run_dir, cfg.parallel.pipeline_stages)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run's own build warnings were shown when it trained
        task = build_task(cfg, BuildContext(seed=cfg.train.seed, data_dir=Path(cfg.log.root) / ".data"), None)
    model = task.model
    try:
        model.load_state_dict(weights.state)
    except RuntimeError as e:
        raise UserError(f"the weights in {run_dir} do not fit the model its config.yaml "
                        f"builds: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, sample_input(task), weights.source


def check_shape(got: tuple[int, ...], sample: Any, path: Path) -> None:
    """UserError unless the rows of ``got`` have the shape of the model's samples."""
    from scidl.cli import UserError

    if sample is None:
        raise UserError("scidl infer needs a workload whose samples are (input, target) "
                        "tensors; this one's are not")
    want = tuple(sample.shape)
    if len(got) < 1 or tuple(got[1:]) != want:
        shown = ", ".join(["N", *map(str, want)])
        raise UserError(f"--input {path} has shape {got}; the model expects ({shown}) "
                        f"(samples of shape {want})")


def predict(model: Any, rows: np.ndarray, dtype: Any, batch_size: int) -> np.ndarray:
    """``model`` on ``rows`` in batches of ``batch_size``; the outputs stacked in order."""
    import torch

    from scidl.cli import UserError

    outs = []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            try:
                x = torch.as_tensor(np.ascontiguousarray(rows[i:i + batch_size])).to(dtype)
            except TypeError as e:
                raise UserError(f"the inputs are not numbers ({rows.dtype}): {e}") from None
            y = model(x)
            if not isinstance(y, torch.Tensor):
                raise UserError(f"the model returns a {type(y).__name__}, not a tensor; "
                                "scidl infer writes tensor outputs")
            outs.append(y.detach().cpu().numpy())
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(outs)


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` for ``rank`` of ``world`` (contiguous, in order)."""
    return n * rank // world, n * (rank + 1) // world


def _infer_rank(rank: int, world: int, run_dir: str, inp: str, dataset: str | None,
                out: str, batch_size: int, n: int) -> int:
    """One process of ``--nproc N``: its share of the rows, gathered to rank 0, which writes."""
    import torch.distributed as dist

    model, sample, _ = load_model(Path(run_dir))
    start, stop = share(n, rank, world)
    mine = predict(model, read_rows(Path(inp), dataset, start, stop), sample.dtype, batch_size)
    parts: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, parts, dst=0)
    if parts is not None:
        write_outputs(Path(out), np.concatenate([p for p in parts if len(p)] or [mine]))
    return len(mine)


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1 (got {args.nproc})")
    run_dir, inp, out = Path(args.run_dir), Path(args.input), Path(args.output)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    shape = input_shape(inp, args.dataset)
    _suffix(out, "--output")
    model, sample, source = load_model(run_dir)
    check_shape(shape, sample, inp)
    print(f"weights: {source}", flush=True)
    n = shape[0]
    if args.nproc == 1:
        write_outputs(out, predict(model, read_rows(inp, args.dataset, 0, n), sample.dtype,
                                   args.batch_size))
    else:
        launch(_infer_rank, args.nproc, str(run_dir), str(inp), args.dataset, str(out),
               args.batch_size, n)
    print(f"wrote {n} output(s) to {out}", flush=True)
    return 0


def launch(fn: Any, nproc: int, *args: Any) -> list[Any]:
    """``fn(rank, world, *args)`` on ``nproc`` local gloo processes (the local launcher)."""
    from scidl.runtime.launch import run_distributed

    return list(run_distributed(fn, nproc, *args, timeout=3600.0))
