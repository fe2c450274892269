"""TensorBoard event files under ``RUN_DIR/tensorboard`` (``log.tensorboard``).

Values go under grouped tags (:func:`scidl.train.logging.tb_tag`): ``train/…``,
``comm/…`` and ``eval/…``. At the end the run's ``config.yaml`` is logged as
hyperparameters (HParams dashboard) with the last value of each evaluation metric and
of the loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scidl.train.logging import NOT_PLOTTED, flat_hparams, read_config, tb_tag


class TensorBoardLogger:
    def __init__(self, run_dir: Path, cfg: Any = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self._last: dict[str, float] = {}

    def log(self, row: Mapping[str, Any]) -> None:
        step = int(row.get("step", 0))
        for k, v in row.items():
            if k not in NOT_PLOTTED and isinstance(v, (int, float)):
                tag = tb_tag(k)
                self._tb.add_scalar(tag, v, step)
                if tag.startswith("eval/") or tag == "train/loss":
                    self._last[tag] = float(v)

    def _log_hparams(self) -> None:
        """The config as hyperparameters, against the last eval metrics and loss."""
        from torch.utils.tensorboard.summary import hparams

        params = flat_hparams(read_config(self.run_dir))
        if not params:
            return
        metrics = {k: v for k, v in self._last.items() if math.isfinite(v)}
        writer = self._tb._get_file_writer()
        for summary in hparams(params, metrics):
            writer.add_summary(summary)

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        self._log_hparams()
        self._tb.flush()
        self._tb.close()
