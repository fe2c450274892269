"""When skipped (non-finite) steps mean a failed run: the ``train.max_skipped_fraction`` rule."""

from __future__ import annotations

from scidl.config import ConfigError


class TrainingDiverged(ConfigError):
    """The run skipped too many steps (non-finite loss or gradients); one-line message.

    A :class:`~scidl.config.ConfigError`, so the command line prints it as one line and
    exits with status 2, from the main process or from a worker.
    """


def check_skipped(skipped: int, done: int, total: int, max_fraction: float) -> str | None:
    """The failure message once ``skipped`` of ``done`` steps (of a ``total``-step budget)
    break the rule, else None.

    The run fails as soon as more than ``max_fraction`` of its whole budget has been
    skipped (the final fraction can only be higher, so it stops early instead of
    spending the rest of the budget), and at its end if every step was skipped.
    """
    over = skipped > max_fraction * total
    all_skipped = done >= total and skipped >= done > 0
    if not (over or all_skipped):
        return None
    what = f"every one of its {done} steps" if all_skipped else (
        f"{skipped} of {done} steps so far (budget {total} steps)")
    return (f"training failed: it skipped {what} because the loss or gradients were NaN/Inf, "
            f"more than train.max_skipped_fraction={max_fraction:g}; lower optim.lr, set "
            "train.clip_grad_norm, or check the data")
