"""Checkpoint averaging (§6.1): "For the base models, we used a single model obtained by averaging
the last 5 checkpoints, which were written at 10-minute intervals."
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from aiayn.files import atomic_write
from aiayn.train.checkpoint import (
    AVERAGED_DIR,
    WEIGHTS_FILE,
    checkpoint_step,
    list_checkpoints,
    read_weights,
)


def average_checkpoints(
    run_dir: str | Path,
    *,
    last: int = 5,
    until: int | None = None,
    out: str | Path | None = None,
) -> Path:
    """Average the weights of the newest `last` step checkpoints of a run, parameter by
    parameter (accumulated in fp64), into `out/model.safetensors` (default `RUN_DIR/averaged/`).

    With `until`, only checkpoints at or before that update count: what a run stopped there
    would have averaged (the learning-rate schedules do not depend on the planned length,
    except cosine).

    Returns:
        The written weights file; `load_model(run_dir, "averaged")` loads it.

    Raises:
        ValueError: `last` < 1, or the checkpoints hold different tensors.
        CheckpointError: A checkpoint's weights do not load (names the file).
        FileNotFoundError: The run has no checkpoints (at or before `until`).
    """
    if last < 1:
        raise ValueError(f"--last must be at least 1, got {last}")
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir)
    if until is not None:
        found = [p for p in found if checkpoint_step(p) <= until]
    chosen = found[-last:]
    if not chosen:
        before = "" if until is None else f" at or before update {until}"
        raise FileNotFoundError(f"{run_dir} has no checkpoints{before} to average")
    total: dict[str, torch.Tensor] = {}
    for path in chosen:
        weights = read_weights(path / WEIGHTS_FILE)
        if total and weights.keys() != total.keys():
            raise ValueError(f"{path} holds other tensors than {chosen[0]}")
        for name, tensor in weights.items():
            total[name] = total.get(name, 0) + tensor.double()
    # `weights` still holds the newest checkpoint: the average keeps its dtypes.
    averaged = {name: (t / len(chosen)).to(weights[name].dtype) for name, t in total.items()}
    out_dir = Path(out) if out is not None else run_dir / AVERAGED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [p.name for p in chosen]
    file = out_dir / WEIGHTS_FILE
    atomic_write(file, safetensors.torch.save(averaged, metadata={"averaged": json.dumps(sources)}))
    return file
