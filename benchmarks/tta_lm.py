"""A small GPT-style language model for the time-to-accuracy benchmark (a task factory).

    scidl train benchmarks/tta_lm.py:make_task --nproc 2 --max-steps 50

A decoder-only transformer (pre-norm blocks of ``torch.nn.TransformerEncoderLayer`` with
a causal mask, learned positions, untied output layer; 5.8 M parameters by default)
learns a synthetic language: a Markov chain over ``vocab`` tokens whose next token, given
the previous one (``order=1``, the default) or a hash of the previous two (``order=2``), is
drawn from a few likely tokens of a seeded random table (Zipf weights) or, with
probability ``noise``, uniformly. The model leaves the uniform guess (ln ``vocab`` nats) on the
order-1 chain within ten steps; on the order-2 chain it stays there for the first hundreds
of steps, too long for a time-to-accuracy budget on a slow link. Nothing is downloaded and every
rank builds the same corpus from the seed. The headline is the held-out cross-entropy
(nats per token, lower is better); its floor is the chain's entropy rate, reported as
``entropy_floor``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

import scidl


class LMSettings(scidl.WorkloadConfig):
    """Model and corpus sizes (``task.*`` on the command line)."""

    vocab: int = Field(512, ge=16, description="tokens")
    d_model: int = Field(256, ge=8, description="embedding width")
    n_layer: int = Field(7, ge=1, description="transformer blocks")
    n_head: int = Field(4, ge=1, description="attention heads (divides d_model)")
    seq_len: int = Field(64, ge=4, description="tokens per training sequence")
    n_train: int = Field(4096, ge=8, description="training sequences")
    n_val: int = Field(256, ge=8, description="held-out sequences")
    order: int = Field(1, ge=1, le=2, description="tokens of context the chain conditions on")
    states: int = Field(4096, ge=16, description="contexts of an order-2 chain (hashed pairs)")
    branching: int = Field(6, ge=1, description="likely next tokens per context")
    noise: float = Field(0.1, ge=0, le=1, description="probability of a uniform next token")


def _chain(cfg: LMSettings) -> tuple[np.ndarray, np.ndarray]:
    """The chain: likely next tokens (states × branching) and their Zipf weights."""
    rng = np.random.default_rng(12345)
    contexts = cfg.vocab if cfg.order == 1 else cfg.states
    nxt = rng.integers(0, cfg.vocab, size=(contexts, cfg.branching))
    w = 1.0 / np.arange(1, cfg.branching + 1)
    return nxt, w / w.sum()


def _state(a: np.ndarray, b: np.ndarray, cfg: LMSettings) -> np.ndarray:
    """The context of the next token: the previous token (order 1) or a hash of the
    previous two (order 2)."""
    if cfg.order == 1:
        return b
    return (a * 1_000_003 + b * 7919) % cfg.states


def entropy_floor(cfg: LMSettings) -> float:
    """Entropy rate of the chain in nats per token (the best achievable held-out loss),
    ignoring collisions among the likely tokens of one context."""
    _, w = _chain(cfg)
    p = (1 - cfg.noise) * w + cfg.noise / cfg.vocab
    rest = cfg.vocab - len(w)
    q = cfg.noise / cfg.vocab
    return float(-(p * np.log(p)).sum() - (rest * q * math.log(q) if q > 0 else 0.0))


def corpus(cfg: LMSettings, n: int, seed: int) -> torch.Tensor:
    """``n`` sequences of ``seq_len + 1`` tokens drawn from the chain."""
    nxt, w = _chain(cfg)
    rng = np.random.default_rng(seed)
    out = np.empty((n, cfg.seq_len + 1), dtype=np.int64)
    out[:, :2] = rng.integers(0, cfg.vocab, size=(n, 2))
    cum = np.cumsum(w)
    for t in range(2, cfg.seq_len + 1):
        s = _state(out[:, t - 2], out[:, t - 1], cfg)
        pick = np.minimum(np.searchsorted(cum, rng.random(n)), len(w) - 1)
        likely = nxt[s, pick]
        uniform = rng.integers(0, cfg.vocab, size=n)
        out[:, t] = np.where(rng.random(n) < cfg.noise, uniform, likely)
    return torch.from_numpy(out)


class Sequences(Dataset):
    """(input, target) pairs: a sequence and the same shifted by one token."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.tokens[i]
        return seq[:-1], seq[1:]


class TinyGPT(nn.Module):
    """Decoder-only transformer: token + position embeddings, pre-norm causal blocks."""

    def __init__(self, cfg: LMSettings) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_head, 4 * cfg.d_model,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(n, device=x.device))
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def make_task(cfg: LMSettings, ctx: scidl.BuildContext) -> scidl.Task:
    """The LM task: train and held-out sequences from different seeds of the same chain."""
    if cfg.d_model % cfg.n_head:
        raise scidl.ConfigError("task.n_head must divide task.d_model")
    torch.manual_seed(ctx.seed)
    floor = entropy_floor(cfg)
    val = Sequences(corpus(cfg, cfg.n_val, seed=2))

    def evaluate(model: nn.Module, data: Sequences) -> dict[str, float]:
        dev = next(model.parameters()).device
        chunks = data.tokens.to(dev).split(64)
        losses = [_loss(model, (c[:, :-1], c[:, 1:])).item() for c in chunks]
        loss = float(np.mean(losses))
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "entropy_floor": floor}

    return scidl.Task(
        model=TinyGPT(cfg),
        train_data=Sequences(corpus(cfg, cfg.n_train, seed=1)),
        val_data=val,
        loss=_loss,
        evaluate=evaluate,
        headline="loss",
        higher_is_better=False,
    )
