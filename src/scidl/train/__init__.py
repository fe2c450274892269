"""Training: the entry point, the loop, checkpoints and metrics files.

Public modules (imported on use): :mod:`scidl.train.api` (``run``, ``RunResult``, also
exported as :func:`scidl.run`), :mod:`scidl.train.trainer` (``Trainer``),
:mod:`scidl.train.checkpoint` (atomic, hashed checkpoints) and :mod:`scidl.train.logging`
(``metrics.jsonl`` and TensorBoard).
"""

__all__ = ["api", "checkpoint", "logging", "trainer"]
