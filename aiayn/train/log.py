"""Watching a run: `RUN_DIR/metrics.jsonl` (one JSON record per line, appended and flushed as
training goes), TensorBoard event files when tensorboard is installed, and `plot_run`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiayn.files import atomic_write

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """Appends records to `metrics.jsonl` (and TensorBoard); a no-op on ranks other than 0.

    Args:
        run_dir: The run directory.
        enabled: False on ranks that must not write.
        resume_step: Drop records logged after this step by a run that was then killed, so a
            resumed run's log reads as if it had never stopped; None starts a new log.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True, resume_step: int | None = None):
        self.path, self.enabled = Path(run_dir) / METRICS_FILE, enabled
        self.writer = None
        if not enabled:
            return
        kept = (
            [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            if (resume_step is not None)
            else []
        )
        # atomically: a kill here must not lose the records of the steps that are kept
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = _tensorboard_writer(Path(run_dir) / TENSORBOARD_DIR, resume_step)

    def append(self, kind: str, record: dict[str, Any]) -> None:
        """Add `{"kind": kind, **record}`; numbers also go to TensorBoard as `kind/key`."""
        if not self.enabled:
            return
        with self.path.open("a") as out:
            out.write(json.dumps({"kind": kind, **record}) + "\n")
        if self.writer is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (or of `RUN_DIR/metrics.jsonl`); a line cut by a kill is
    skipped."""
    path = Path(path)
    path = path / METRICS_FILE if path.is_dir() else path
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw the loss, learning-rate and BLEU curves of a run to PNG files (default
    `RUN_DIR/plots/`); returns the files written."""
    from aiayn.evaluate.plots import plot_curves

    records = read_metrics(run_dir)
    if not records:
        raise FileNotFoundError(f"no metrics in {Path(run_dir) / METRICS_FILE}")
    return plot_curves(records, Path(out_dir) if out_dir else Path(run_dir) / "plots")


def _tensorboard_writer(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)
