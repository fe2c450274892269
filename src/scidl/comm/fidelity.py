"""How much of the optimizer's update a gradient compressor keeps.

A compressor with error feedback sends ``C(g + e)`` and keeps the rest ``e``; what the
model feels is the optimizer's update computed from what was sent. For SGD with momentum
the update is the momentum buffer; for Adam it is ``m̂ / (√v̂ + ε)``, which divides every
coordinate by its own scale, so an error the compressor makes in coordinates with small
gradients is magnified. The measure here is the cosine between the update an optimizer
fed the compressed gradients would apply and the one fed the exact gradients, along the
same (exact) training trajectory.

Why the square of that cosine prices a compressor: a step along a direction at angle θ
to the exact one, with its step size chosen for that direction, lowers a smooth loss by
``cos²θ`` of what the exact step would (the descent lemma), which is the contraction
factor δ of a δ-compressor (``‖C(x) − x‖² ≤ (1 − δ)‖x‖²`` for the best scaling of
``C``), and error-feedback methods need about ``1/δ`` as many steps (Karimireddy et al.,
"Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019; Stich &
Karimireddy, 2019). Time to accuracy ≈ step time ÷ δ.

Pure functions and small state holders; nothing here communicates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from scidl.comm.powersgd import matrix_shape, orthonormalise

__all__ = ["EXACT", "EFCompressor", "FidelityTracker", "UpdateShadow", "cosine",
           "first_look", "kept_share", "powersgd_approx", "sample_tensors", "topk_approx",
           "update_rule"]


def powersgd_approx(m: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One power iteration of PowerSGD (Vogels et al. 2019) on the matrix ``m`` with the
    warm start ``q`` (cols × rank): the rank-``r`` approximation ``P Qᵀ`` and the new
    ``Q``. Linear in ``m``, so on the mean of the ranks' matrices it equals what the
    distributed version reduces to."""
    p = orthonormalise(m @ q)
    q_new = m.t() @ p
    return p @ q_new.t(), q_new


def topk_approx(x: torch.Tensor, density: float) -> torch.Tensor:
    """``x`` with all but its ``ceil(density · n)`` largest-magnitude entries zeroed."""
    flat = x.reshape(-1)
    k = max(1, int(-(-density * flat.numel() // 1)))
    out = torch.zeros_like(flat)
    idx = flat.abs().topk(min(k, flat.numel())).indices
    out[idx] = flat[idx]
    return out.view_as(x)


@dataclass
class EFCompressor:
    """A compressor with error feedback over a list of gradient tensors (one model).

    ``kind``: ``powersgd`` (rank ``rank``; tensors that compression would not shrink are
    sent whole, as SciDL's ``powersgd`` does), ``topk`` (``density`` of each tensor's
    entries, as SciDL's ``topk`` selects per parameter) or ``quant`` (the list taken as
    one bucket in blocks of ``chunk`` entries at ``bits`` bits, then the owner's
    re-quantization with its own residual, as SciDL's ``quant`` does, from one rank's
    gradients). ``compress(grads)`` returns what would be sent for ``grads`` and keeps
    the residuals for the next call.
    """

    kind: Literal["powersgd", "topk", "quant"]
    rank: int = 4
    density: float = 0.01
    bits: int = 8
    chunk: int = 1024
    seed: int = 0
    _residual: list[torch.Tensor] = field(default_factory=list)
    _q: dict[int, torch.Tensor] = field(default_factory=dict)
    _server: torch.Tensor | None = None

    def compress(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self._residual:
            self._residual = [torch.zeros_like(g) for g in grads]
        if self.kind == "quant":
            return self._quant(grads)
        out = []
        for i, (g, e) in enumerate(zip(grads, self._residual, strict=True)):
            acc = g + e
            sent = self._one(i, acc)
            self._residual[i] = acc - sent
            out.append(sent)
        return out

    def _quant(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        from scidl.comm.quant import dequantize, quantize

        accs = [g + e for g, e in zip(grads, self._residual, strict=True)]
        flat = torch.cat([a.reshape(-1) for a in accs]).float()
        n = flat.numel()
        padded = torch.nn.functional.pad(flat, (0, -n % self.chunk))
        sent = dequantize(*quantize(padded, self.bits, self.chunk), self.bits, self.chunk)
        owner = sent + (self._server if self._server is not None else 0.0)
        out = dequantize(*quantize(owner, self.bits, self.chunk), self.bits, self.chunk)
        self._server = owner - out
        start, result = 0, []
        for i, a in enumerate(accs):
            k = a.numel()
            self._residual[i] = a - sent[start:start + k].view_as(a).to(a.dtype)
            result.append(out[start:start + k].view_as(a).to(a.dtype))
            start += k
        return result

    def _one(self, i: int, acc: torch.Tensor) -> torch.Tensor:
        if self.kind == "topk":
            return topk_approx(acc, self.density)
        shape = matrix_shape(acc, self.rank)
        if shape is None:
            return acc.clone()
        m = acc.reshape(shape)
        q = self._q.get(i)
        if q is None:
            gen = torch.Generator().manual_seed(self.seed + i)
            q = torch.randn(shape[1], self.rank, generator=gen, dtype=acc.dtype).to(acc.device)
        approx, self._q[i] = powersgd_approx(m, q)
        return approx.view_as(acc)


@dataclass
class UpdateShadow:
    """The update an optimizer would apply when fed a sequence of gradients, without
    applying it: ``sgd`` (heavy-ball momentum ``momentum``; the update is the buffer) or
    ``adam`` (bias-corrected ``m̂ / (√v̂ + eps)``)."""

    kind: Literal["sgd", "adam"]
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    _m: list[torch.Tensor] = field(default_factory=list)
    _v: list[torch.Tensor] = field(default_factory=list)
    _t: int = 0

    def update(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self._m:
            self._m = [torch.zeros_like(g) for g in grads]
            self._v = [torch.zeros_like(g) for g in grads] if self.kind == "adam" else []
        self._t += 1
        if self.kind == "sgd":
            for m, g in zip(self._m, grads, strict=True):
                m.mul_(self.momentum).add_(g)
            return [m.clone() for m in self._m]
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self._t, 1 - b2 ** self._t
        out = []
        for m, v, g in zip(self._m, self._v, grads, strict=True):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            den = (v / c2).sqrt_().add_(self.eps)  # one buffer: the shadow runs every hook
            out.append(torch.div(m, den, out=den).div_(c1))
        return out


def cosine(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    """Cosine between two lists of tensors taken as one vector each (0 if either is 0)."""
    dot = na = nb = 0.0
    for x, y in zip(a, b, strict=True):
        x64, y64 = x.double(), y.double()
        dot += float((x64 * y64).sum())
        na += float((x64 * x64).sum())
        nb += float((y64 * y64).sum())
    return dot / (na * nb) ** 0.5 if na > 0 and nb > 0 else 0.0


def update_rule(optimizer: torch.optim.Optimizer) -> Callable[[], UpdateShadow] | None:
    """A factory of shadows of ``optimizer``'s update (its first parameter group's
    settings): Adam and AdamW (the moment part; AdamW's decoupled decay is left out),
    SGD (its momentum, 0 for plain SGD). None for other optimizers."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        betas = tuple(float(b) for b in group.get("betas", (0.9, 0.999)))
        eps = float(group.get("eps", 1e-8))
        return lambda: UpdateShadow("adam", betas=(betas[0], betas[1]), eps=eps)
    if isinstance(optimizer, torch.optim.SGD):
        momentum = float(group.get("momentum", 0.0))
        return lambda: UpdateShadow("sgd", momentum=momentum)
    return None


Sums = tuple[float, float, float]  # Σ⟨u, ũ⟩, Σ‖u‖², Σ‖ũ‖² over the counted steps
EXACT = ""  # the key of a bucket's exact update in :meth:`FidelityTracker.sums`


def sample_tensors(sizes: Sequence[int], max_entries: int, seed: int) -> list[int]:
    """Indices (ascending) of a deterministic sample of a bucket's tensors holding at most
    ``max_entries`` entries (at least one tensor), in the order of a permutation seeded by
    ``seed``; every index when ``max_entries`` is 0 or the bucket fits."""
    if max_entries <= 0 or sum(sizes) <= max_entries:
        return list(range(len(sizes)))
    order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed)).tolist()
    picked: list[int] = []
    total = 0
    for i in order:
        if picked and total + sizes[i] > max_entries:
            continue
        picked.append(i)
        total += sizes[i]
    return sorted(picked)


@dataclass
class _BucketState:
    key: tuple[int, ...]
    exact: UpdateShadow
    candidates: dict[str, tuple[EFCompressor, UpdateShadow]]
    sums: dict[str, list[float]] = field(default_factory=dict)
    codec: dict[str, list[float]] = field(default_factory=dict)  # Σ seconds, calls
    picked: list[int] = field(default_factory=list)  # the tensors observed
    scale: float = 1.0  # the bucket's entries ÷ the observed ones


class FidelityTracker:
    """Per bucket, how much of the optimizer's update each compressed candidate keeps.

    ``observe`` takes one bucket's gradients (one tensor per parameter) each step (or
    :meth:`take` copies them and :meth:`measure` runs later, e.g. while the bucket is
    on the wire): the
    exact shadow and each candidate's compressor (with its own error feedback) and shadow
    are advanced, and from step ``count_from`` on the dot products are summed.
    :meth:`sums` gives, per bucket, candidate → (Σ⟨u, ũ⟩, Σ‖u‖², Σ‖ũ‖²), the exact update
    under :data:`EXACT`; :func:`kept_share` turns an assignment into δ. :meth:`codec`
    gives, per bucket, candidate → mean seconds of one compression over the same steps
    (the model's work standing in for the strategy's own encoding and decoding).

    ``max_entries`` > 0 bounds the work per bucket: a bucket with more entries is
    observed through a fixed sample of its tensors (:func:`sample_tensors`) holding at
    most that many, and its sums and compression times are scaled by its entries ÷ the
    sample's, so buckets keep their weight in δ.
    """

    def __init__(self, rule: Callable[[], UpdateShadow],
                 compressors: dict[str, Callable[[], EFCompressor]], count_from: int,
                 max_entries: int = 0) -> None:
        self.rule, self.compressors, self.count_from = rule, compressors, count_from
        self.max_entries = int(max_entries)
        self._buckets: dict[int, _BucketState] = {}

    def observe(self, index: int, key: tuple[int, ...], grads: Sequence[torch.Tensor],
                step: int) -> None:
        """:meth:`take` then :meth:`measure`: one bucket's gradients of one step."""
        self.measure(index, self.take(index, key, grads), step)

    def take(self, index: int, key: tuple[int, ...], grads: Sequence[torch.Tensor]
             ) -> list[torch.Tensor]:
        """Copies of the tensors of bucket ``index`` (parameter positions ``key``) that
        are observed (all, or the bucket's fixed sample), for :meth:`measure`: the
        bucket's buffer may be reduced in place before they are measured."""
        st = self._buckets.get(index)
        if st is None or st.key != key:  # a new or rebuilt bucket starts afresh
            st = _BucketState(key, self.rule(),
                              {n: (make(), self.rule()) for n, make in self.compressors.items()})
            sizes = [g.numel() for g in grads]
            st.picked = sample_tensors(sizes, self.max_entries, seed=index)
            st.scale = sum(sizes) / max(sum(sizes[i] for i in st.picked), 1)
            self._buckets[index] = st
        return [grads[i].detach().clone() for i in st.picked]

    def measure(self, index: int, grads: Sequence[torch.Tensor], step: int) -> None:
        """Advance bucket ``index``'s shadows and compressors by the tensors :meth:`take`
        gave, and from step ``count_from`` on add to its sums."""
        st = self._buckets[index]
        k = st.scale
        with torch.no_grad():
            u = st.exact.update(grads)
            ee = _dot(u, u)
            count = step >= self.count_from
            for name, (comp, shadow) in st.candidates.items():
                t0 = time.perf_counter()
                sent = comp.compress(grads)
                spent = time.perf_counter() - t0
                uc = shadow.update(sent)
                if count:
                    _add(st.sums, name, (k * _dot(u, uc), k * ee, k * _dot(uc, uc)))
                    _add(st.codec, name, (k * spent, 1.0))
            if count:
                _add(st.sums, EXACT, (k * ee, k * ee, k * ee))

    def sums(self, n_buckets: int) -> list[dict[str, Sums]]:
        """Per bucket index ``0 … n_buckets-1`` its sums (empty where none were counted)."""
        out: list[dict[str, Sums]] = []
        for i in range(n_buckets):
            st = self._buckets.get(i)
            out.append({} if st is None else {k: (v[0], v[1], v[2]) for k, v in st.sums.items()})
        return out

    def codec(self, n_buckets: int) -> list[dict[str, float]]:
        """Per bucket index ``0 … n_buckets-1``, candidate → mean seconds per compression
        over the counted steps (empty where none were counted)."""
        out: list[dict[str, float]] = []
        for i in range(n_buckets):
            st = self._buckets.get(i)
            out.append({} if st is None else
                       {k: v[0] / v[1] for k, v in st.codec.items() if v[1] > 0})
        return out

    def reset(self) -> None:
        """Forget everything (a skipped, non-finite step reached the shadows)."""
        self._buckets.clear()


def first_look(grads: Sequence[torch.Tensor],
               compressors: dict[str, Callable[[], EFCompressor]]
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Before any update is seen: per candidate, the share of these gradients its
    compressor keeps (cos² between what it sends and ``grads``, one call, no residual
    yet) and its seconds per gradient entry (a second call, after the first one's
    allocations)."""
    entries = max(sum(g.numel() for g in grads), 1)
    kept: dict[str, float] = {}
    per_entry: dict[str, float] = {}
    with torch.no_grad():
        for name, make in compressors.items():
            comp = make()
            kept[name] = max(cosine(comp.compress(grads), grads), 0.0) ** 2
            t0 = time.perf_counter()
            comp.compress(grads)
            per_entry[name] = (time.perf_counter() - t0) / entries
    return kept, per_entry


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Σ⟨x, y⟩ in the tensors' own precision (float32 at least): the sums run in every
    hook of the measuring steps, and a cosine needs no more digits than float32 holds."""
    total = 0.0
    for x, y in zip(a, b, strict=True):
        xf, yf = x.reshape(-1), y.reshape(-1)
        if xf.dtype not in (torch.float32, torch.float64) or xf.dtype != yf.dtype:
            xf, yf = xf.float(), yf.float()
        total += float(torch.dot(xf, yf))
    return total


def _add(sums: dict[str, list[float]], key: str, vals: Sequence[float]) -> None:
    acc = sums.setdefault(key, [0.0] * len(vals))
    for i, v in enumerate(vals):
        acc[i] += v


def kept_share(names: Sequence[str], fidelity: Sequence[dict[str, Sums]]) -> float:
    """δ of an assignment (candidate ``names[b]`` for bucket b): the squared cosine
    between the whole model's exact update and the one under the assignment, from each
    bucket's sums; a candidate without sums for a bucket keeps its update whole (dense,
    fp16). Buckets never observed count for nothing; 0 when the two point apart."""
    dot = exact = kept = 0.0
    for name, fid in zip(names, fidelity, strict=True):
        if EXACT not in fid:
            continue
        d, e, c = fid.get(name, fid[EXACT])
        dot, exact, kept = dot + d, exact + e, kept + c
    if exact <= 0 or kept <= 0:
        return 1.0 if exact <= 0 else 0.0
    return max(dot, 0.0) ** 2 / (exact * kept)
