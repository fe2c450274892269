"""The multi-process FSDP runs of tests/parallel, started once per session and shared:
one 4-process group trains the 4-rank parity cases and saves the 4-rank checkpoints; one
2-process group trains the 2-rank parity cases, resumes those checkpoints on 2 ranks
and runs the same-size resume cases (each group pays its process start-up once).

test_par_fsdp_integration.py asserts on the parity results, and
test_par_fsdp_checkpoint_integration.py on the checkpoint ones (fixtures in tests/conftest.py).
"""

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.utils.data import TensorDataset

from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.train.trainer import Trainer
from scidl.workloads import Task

# ------------------------------------------------------------- parity (FSDP vs DDP)

def parity_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 6, generator=g), torch.randn(128, 1, generator=g)
    mse = nn.functional.mse_loss
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    return Task(model=model, train_data=TensorDataset(x, y), loss=lambda m, b: mse(m(b[0]), b[1]),
                criterion=mse, evaluate=lambda m, d: {"loss": float(mse(m(d.tensors[0]), d.tensors[1]))},
                val_data=TensorDataset(x[:16], y[:16]))


def _nan_on_rank1_call(task, bad_call):
    """``task``'s loss is NaN on rank 1's ``bad_call``-th evaluation (only there)."""
    calls, inner = [0], task.loss

    def loss(model, batch):
        calls[0] += 1
        out = inner(model, batch)
        return out * float("nan") if dist.get_rank() == 1 and calls[0] == bad_call else out

    task.loss = loss
    return task


def parity_cfg(run_dir, *extra):
    return load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "train.max_steps=20", "checkpoint.final=false",
        "checkpoint.best=false", "train.eval_every=10", "optim.name=adam", "optim.lr=0.01",
        "train.global_batch_size=16", "train.clip_grad_norm=1.0", f"log.run_dir={run_dir}", *extra])


def _train(run_dir, *extra, nan_call=None):
    cfg = parity_cfg(run_dir, *extra)
    with distributed_context() as dctx:
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        task = parity_task() if nan_call is None else _nan_on_rank1_call(parity_task(), nan_call)
        tr = Trainer(cfg, task, dctx, Path(run_dir))
        tr.fit()
        full = tr.plan.full_state() if hasattr(tr.plan, "full_state") else tr.model.state_dict()
        return tr, {k: v.detach().cpu().clone() for k, v in full.items()}


def _parity(rank, world, root):
    torch.set_num_threads(1)
    accum = ["train.grad_accum=2"] if world == 2 else []  # gradient sync on the last micro-batch only
    _, ddp = _train(f"{root}/ddp", *accum)
    layouts = ["full"] + (["hybrid"] if world == 4 else [])
    out = {}
    for shard in layouts:
        extra = [f"parallel.shard={shard}", *accum] + (["parallel.shard_size=2"] if shard == "hybrid" else [])
        tr, got = _train(f"{root}/{shard}", *extra)
        local = sum(p.to_local().numel() for p in tr.model.parameters())
        total = sum(p.numel() for p in tr.model.parameters())
        diff = max((got[k] - ddp[k]).abs().max().item() for k in ddp) if rank == 0 else 0.0
        out[shard] = {"diff": diff, "local": local, "total": total,
                      "grad_norm": [r.get("grad_norm") for r in tr.history],
                      "eval": tr.last_eval.get("loss")}
    if world == 2:  # a NaN loss on one rank: its gradient shards say so, every rank skips
        tr, _ = _train(f"{root}/nan", "parallel.shard=full", nan_call=3)
        out["nan"] = {"skipped": tr.skipped_steps, "rows": [r["skipped"] for r in tr.history][:3]}
    dist.barrier()
    return out


# ------------------------------------------------------------------- checkpoints

def ckpt_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 6, generator=g), torch.randn(128, 1, generator=g)
    mse = nn.functional.mse_loss
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    return Task(model=model, train_data=TensorDataset(x, y), loss=lambda m, b: mse(m(b[0]), b[1]),
                criterion=mse, evaluate=lambda m, d: {}, val_data=None)


def ckpt_cfg(run_dir, steps, *extra):
    return load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", f"train.max_steps={steps}",
        "checkpoint.every_steps=2", "checkpoint.best=false", "optim.name=adam", "optim.lr=0.01",
        "train.global_batch_size=16", f"log.run_dir={run_dir}", *extra])


class _CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, row):
        if trainer.step == self.step:
            raise RuntimeError("simulated crash")


def _trainer(run_dir, steps, *extra, callbacks=()):
    cfg = ckpt_cfg(run_dir, steps, *extra)
    dctx = distributed_context().__enter__()  # the group outlives the trainer (closed at exit)
    seed_everything(cfg.train.seed + 1 + dctx.rank)
    return Trainer(cfg, ckpt_task(), dctx, Path(run_dir), callbacks)


def _full(tr):
    """Model and optimizer state, whole, keyed by parameter name (rank 0; {} elsewhere)."""
    m, o = get_state_dict(tr.model, tr.optimizer,
                          options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    flat = {f"model.{k}": v for k, v in m.items()}
    for name, st in o.get("state", {}).items():
        flat.update({f"optim.{name}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return {k: v.detach().cpu().clone() for k, v in flat.items()}


def diff(a, b):
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:4]
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _same_size(rank, world, root):
    torch.set_num_threads(1)
    out = {}
    for name, extra in {"sync": ["parallel.shard=full"],
                        "async": ["parallel.shard=full", "checkpoint.async_save=true"]}.items():
        full = _trainer(f"{root}/{name}_full", 6, *extra)
        full.fit()
        try:
            _trainer(f"{root}/{name}_part", 6, *extra, callbacks=[_CrashAt(5)]).fit()
        except RuntimeError:
            pass
        dist.barrier()
        tr = _trainer(f"{root}/{name}_part", 6, *extra)
        resumed_at = tr.resume()
        tr.fit()
        mine = [p.to_local() for p in tr.model.parameters()]
        ref = [p.to_local() for p in full.model.parameters()]
        out[name] = {"diff": max((a - b).abs().max().item() if a.numel() else 0.0
                                 for a, b in zip(ref, mine, strict=True)),
                     "resumed_at": resumed_at, "steps": tr.step}
    return out


def _save_on_4(rank, world, root):
    torch.set_num_threads(1)
    out = {}
    for name, extra in {"fsdp": ["parallel.shard=full"], "ddp": []}.items():
        tr = _trainer(f"{root}/{name}4", 4, *extra)
        tr.fit()  # checkpoints at steps 2 and 4 (final)
        out[name] = _full(tr)
    return out["fsdp"] if rank == 0 else None, out["ddp"] if rank == 0 else None


def _resume_on_2(rank, world, root, cases):
    torch.set_num_threads(1)
    out = {}
    for name, (src, extra) in cases.items():
        if rank == 0:
            shutil.copytree(f"{root}/{src}4", f"{root}/{name}")
        dist.barrier()
        tr = _trainer(f"{root}/{name}", 6, *extra)
        step = tr.resume()
        loaded = _full(tr)
        tr.fit()
        out[name] = {"step": step, "loaded": loaded, "end": tr.step,
                     "micro": tr.micro_in_epoch}
    return out


# ------------------------------------------------------------- the shared groups

# resume cases of the 2-rank group: (4-rank run copied, overrides of the resumed run)
CASES = {"fsdp_to_fsdp": ("fsdp", ["parallel.shard=full"]),
         "fsdp_to_ddp": ("fsdp", ["checkpoint.format=dcp"]),
         "ddp_to_fsdp": ("ddp", ["parallel.shard=full"]),
         "ddp_to_ddp": ("ddp", [])}  # whole state in state.pt: any process count


def four_ranks(rank, world, root):
    """4 ranks: the parity cases (folder ``root/parity``), then the runs saved on 4
    (``root/ckpt``); rank 0's checkpoint states, None elsewhere."""
    parity = _parity(rank, world, f"{root}/parity")
    fsdp4, ddp4 = _save_on_4(rank, world, f"{root}/ckpt")
    return {"parity": parity, "fsdp4": fsdp4, "ddp4": ddp4}


def two_ranks(rank, world, root, root4):
    """2 ranks: the parity cases (``root/parity``), the resumes of the 4-rank checkpoints
    of ``root4/ckpt`` (last after its own runs) and the same-size resumes
    (``root/same``, last: its crashed run is the only one that ends in an error)."""
    parity = _parity(rank, world, f"{root}/parity")
    resumed = _resume_on_2(rank, world, f"{root4}/ckpt", CASES)
    same = _same_size(rank, world, f"{root}/same")
    return {"parity": parity, "resumed": resumed if rank == 0 else None, "same": same}
