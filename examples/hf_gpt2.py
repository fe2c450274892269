"""A Hugging Face ``transformers`` model trained by SciDL from the command line.

    scidl train examples/hf_gpt2.py:make_task --nproc 2 --max-steps 50

A two-layer GPT-2 built from a small config (random weights, nothing downloaded) learns
to continue counting sequences (``7 8 9 10 …`` modulo the vocabulary). The loss is the
model's own: ``model(**batch).loss``. Settings are ``task.*`` overrides
(``task.n_layer=4 task.seq_len=64``); the run is filed under ``runs/hf_gpt2/``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch.utils.data import Dataset

import scidl


class GPT2Settings(scidl.WorkloadConfig):
    """The model and data sizes (``task.*`` on the command line)."""

    n_layer: int = Field(2, ge=1, description="transformer blocks")
    n_head: int = Field(2, ge=1, description="attention heads (divides n_embd)")
    n_embd: int = Field(32, ge=1, description="embedding width")
    vocab_size: int = Field(100, ge=2, description="tokens (sequences count modulo this)")
    seq_len: int = Field(16, ge=2, description="tokens per sequence (= n_positions)")
    n_train: int = Field(512, ge=1, description="training sequences")
    n_val: int = Field(64, ge=1, description="validation sequences")


class CountingSequences(Dataset):
    """``input_ids = labels = [s, s+1, …] mod vocab`` from seeded random starts."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, vocab, (n, 1), generator=g)
        self.ids = (start + torch.arange(seq_len)) % vocab

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def _evaluate(model: torch.nn.Module, data: CountingSequences) -> dict[str, float]:
    ids = data.ids.to(next(model.parameters()).device)
    loss = model(input_ids=ids, labels=ids).loss.detach().item()
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def make_task(cfg: GPT2Settings, ctx: scidl.BuildContext) -> scidl.Task:
    """GPT-2 (random init) learning to count."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no advice about generation settings on every rank
    config = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.seq_len, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head,
        bos_token_id=0, eos_token_id=0,  # inside the small vocabulary
    )
    config.loss_type = "ForCausalLM"  # named: no "unrecognised loss_type" notice
    model = GPT2LMHeadModel(config)  # seeded by SciDL: the same weights on every rank
    train = CountingSequences(cfg.n_train, cfg.seq_len, cfg.vocab_size, ctx.seed)
    val = CountingSequences(cfg.n_val, cfg.seq_len, cfg.vocab_size, ctx.seed + 1)
    return scidl.Task(model=model, train_data=train, val_data=val, loss=_loss,
                      evaluate=_evaluate, headline="loss")


# Defaults of a run of this factory (the user's YAML and overrides still win).
make_task.defaults = {"optim": {"lr": 3e-3}, "train": {"batch_size": 16}}  # type: ignore[attr-defined]
