"""Training metrics to TensorBoard, beside ``metrics.jsonl`` (optional: ``prunekit[tensorboard]``).

Every numeric column of an epoch's metrics row (loss, accuracy, LR, img/s...) becomes a scalar
``<column>`` at step = epoch number, in ``<run folder>/tensorboard/``. A resumed run purges the
events after the checkpoint it resumes from, so the curves show each epoch once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError

LOG_DIR = "tensorboard"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by torch's SummaryWriter) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """Writes epoch rows as TensorBoard scalars.

    Args:
        out_dir: the run folder (events go to ``out_dir/tensorboard``).
        start: epochs already done (a resumed run): later events of an older run are purged.

    Example:
        >>> log = TensorBoardLog(Path("runs/x"), start=0)
        >>> log.write({"epoch": 1, "train_loss": 2.1, "val_acc": 0.31})
        >>> log.close()
    """

    def __init__(self, out_dir: Path, start: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(out_dir / LOG_DIR), purge_step=start + 1)

    def write(self, row: dict[str, Any]) -> None:
        """Log the numeric columns of one epoch's metrics row at step ``row["epoch"]``."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def open_tensorboard(enabled: bool | None, out_dir: Path, start: int) -> TensorBoardLog | None:
    """The run's TensorBoard log: ``None`` → when installed; ``True`` → required; ``False`` → off.

    Raises:
        ConfigError: ``enabled`` is True and the ``tensorboard`` package is missing.
    """
    if enabled is False or (enabled is None and not tensorboard_available()):
        return None
    if not tensorboard_available():
        raise ConfigError(
            "tensorboard=True but the tensorboard package is not installed; "
            "pip install 'prunekit[tensorboard]' (or tensorboard=False)"
        )
    return TensorBoardLog(out_dir, start)
