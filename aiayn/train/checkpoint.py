"""The run directory: checkpoints written to a temporary folder, flushed to disk and renamed into
place, exact training state (step, sampler position, RNG states, optimizer), and `load_model`,
the one way back from a run directory to a model. Nothing is unpickled: weights are safetensors,
the optimizer loads with `torch.load(weights_only=True)`, the rest is JSON. A file that does not
load is a `CheckpointError` naming the file and what is wrong with it.

    RUN_DIR/config.yaml, tokenizer.model, metrics.jsonl
    RUN_DIR/checkpoint-00001234/   model.safetensors, optimizer.pt, scheduler.json,
                                   trainer_state.json (written last)
    RUN_DIR/checkpoint-best/       the best by validation score (no optimizer)
    RUN_DIR/averaged/model.safetensors
    RUN_DIR/int8/model.safetensors  the int8 weights `aiayn quantize` made (`aiayn.model.precision`)
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from aiayn.config import RunConfig, load_config
from aiayn.files import fsync_dir, fsync_file, rename_durably
from aiayn.model.precision import (
    INT8_FORMAT,
    check_precision,
    inference_precision,
    int8_tensors,
    load_int8_tensors,
    to_inference_precision,
)
from aiayn.model.transformer import LanguageModel, Transformer, build_model

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
STATE_FILE = "trainer_state.json"
BEST_DIR = "checkpoint-best"
AVERAGED_DIR = "averaged"
IMPORTED_DIR = "checkpoint-imported"
"""The weights `aiayn import` converted: what `best` and `last` load when a run has trained
no checkpoints of its own."""
INT8_DIR = "int8"
"""The int8 weights `aiayn quantize` wrote (`save_int8`): what `--checkpoint int8` loads."""
_STEP_DIR = re.compile(r"^checkpoint-(\d{8})$")
_TMP_PREFIX, _OLD_PREFIX, _DELETE_PREFIX = ".tmp-", ".old-", ".delete-"
BROKEN_SUFFIX = ".broken"
"""A step checkpoint that did not load is renamed `checkpoint-NNNNNNNN.broken` on resume."""


class CheckpointError(ValueError):
    """A checkpoint file that does not load; the message names the file and what is wrong."""


@dataclass
class TrainerState:
    """What, besides weights and optimizer, makes a resumed run continue exactly."""

    step: int = 0
    """Updates done."""
    sampler: dict[str, Any] = field(default_factory=dict)
    """`TokenBatchSampler.state_dict()`: epoch and batches already taken in it."""
    rng: list[dict[str, Any]] = field(default_factory=list)
    """Per rank: python, numpy and torch (CPU and CUDA) generator states."""
    scaler: dict[str, Any] | None = None
    """fp16 GradScaler state."""
    best_score: float | None = None
    """Best validation score so far (higher is better; a loss is stored negated)."""
    best_step: int | None = None
    nonfinite_in_a_row: int = 0
    tokens: int = 0
    """Source + target tokens trained on so far."""
    seconds: float = 0.0
    """Training time so far."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The latest validation results."""
    pending_validation: bool = False
    """A signal stopped the run during this step's validation: a resumed run does it first."""

    @property
    def epoch(self) -> int:
        return int(self.sampler.get("epoch", 0))


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first; temporary and half-written folders are skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def checkpoint_step(path: str | Path) -> int:
    """The update a step checkpoint folder was written at (`checkpoint-00001234` -> 1234)."""
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a step checkpoint folder (checkpoint-NNNNNNNN)")
    return int(match.group(1))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    state: TrainerState,
    *,
    optimizer_state: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically and durably: into `.tmp-<name>` beside it, every
    file flushed to disk (fsync), then renamed into place and the run directory flushed.

    A process killed during the write (or a full disk, or a power cut) leaves the previous
    checkpoints untouched and a `.tmp-` folder that `list_checkpoints` ignores and
    `clean_run_dir` removes. Replacing an existing folder (checkpoint-best) goes through
    `.old-<name>`, which `clean_run_dir` restores if a kill came between the two renames.

    Raises:
        OSError: A write failed (ENOSPC: the disk is full); nothing of it is left behind.
    """
    path = Path(path)
    tmp = path.parent / f"{_TMP_PREFIX}{path.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _save_weights(model, tmp / WEIGHTS_FILE)
        if optimizer_state is not None:
            with open(tmp / OPTIMIZER_FILE, "wb") as out:
                torch.save(optimizer_state, out)
                out.flush()
                os.fsync(out.fileno())
        if scheduler is not None:
            _write_json(tmp / SCHEDULER_FILE, scheduler)
        _write_json(tmp / STATE_FILE, dataclasses.asdict(state))  # last: marks it complete
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.parent / f"{_OLD_PREFIX}{path.name}"
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
    rename_durably(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def clean_run_dir(run_dir: str | Path) -> None:
    """Remove what an interrupted `save_checkpoint` or `prune_checkpoints` left: `.tmp-` and
    `.delete-` folders, and `.old-` folders (restored when the folder they were replacing
    never arrived)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for leftover in run_dir.iterdir():
        if leftover.name.startswith((_TMP_PREFIX, _DELETE_PREFIX)):
            shutil.rmtree(leftover, ignore_errors=True)
        elif leftover.name.startswith(_OLD_PREFIX):
            final = run_dir / leftover.name.removeprefix(_OLD_PREFIX)
            if final.exists():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                os.rename(leftover, final)


def prepare_run_dir(run_dir: str | Path, *, resume: bool) -> None:
    """Create the run directory and clean it (`clean_run_dir`); a directory that already holds
    checkpoints is an error unless the run is being resumed."""
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir)
    if latest is not None and not resume:
        raise ValueError(
            f"{run_dir} already holds checkpoints (latest {latest.name}); pass --resume to "
            "continue that run, or --run-dir for a new one"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_run_dir(run_dir)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints; returns the deleted folders.

    Each is first renamed to `.delete-<name>` (one atomic step), so a kill during the deletion
    never leaves a half-deleted folder under a checkpoint's name."""
    old = list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []
    for path in old:
        doomed = path.parent / f"{_DELETE_PREFIX}{path.name}"
        rename_durably(path, doomed)
        shutil.rmtree(doomed)
    return old


def set_aside(path: str | Path) -> Path:
    """Rename a step checkpoint that does not load to `<name>.broken` (kept for inspection,
    no longer listed); returns the new path."""
    path = Path(path)
    broken = path.with_name(path.name + BROKEN_SUFFIX)
    shutil.rmtree(broken, ignore_errors=True)
    rename_durably(path, broken)
    return broken


def load_trainer_state(path: str | Path) -> TrainerState:
    """The `trainer_state.json` of a checkpoint folder.

    Raises:
        CheckpointError: The file is missing, not JSON, or not a trainer state.
    """
    file = Path(path) / STATE_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(TrainerState)}
        state = TrainerState(**{key: value for key, value in raw.items() if key in known})
        if not isinstance(state.step, int) or not isinstance(state.sampler, dict):
            raise ValueError("step or sampler has the wrong type")
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise CheckpointError(f"{file}: not a trainer state ({_first_line(error)})") from None
    return state


def load_optimizer_state(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The optimizer's `state_dict` (tensors and numbers only: `weights_only=True`).

    Raises:
        CheckpointError: The file is missing, truncated, or holds Python objects (refused:
            loading them would run code).
    """
    file = Path(path) / OPTIMIZER_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    state = load_tensors(file, device)
    if not isinstance(state, dict) or not {"state", "param_groups"} <= state.keys():
        raise CheckpointError(f"{file}: not an optimizer state (no state and param_groups)")
    return state


def load_tensors(file: str | Path, device: torch.device | str = "cpu") -> Any:
    """What a torch file holds, loaded with `weights_only=True`: tensors, numbers, containers.

    Raises:
        CheckpointError: The file is truncated, not a torch file, or holds Python objects
            (refused: loading them would run code).
    """
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _first_line(error)
        if "Weights only load failed" in reason:
            reason = "it holds Python objects, which would run code when loaded; refused"
        raise CheckpointError(f"{file}: not a plain tensor file ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{file}: truncated or not a torch file ({_first_line(error)})"
        ) from None


def read_weights(file: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file.

    Raises:
        CheckpointError: The file is missing, truncated or not safetensors.
    """
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        return safetensors.torch.load_file(file, device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{file}: {_safetensors_reason(error)}") from None


def load_weights(model: nn.Module, path: str | Path, *, device: torch.device | str = "cpu") -> None:
    """Load `model.safetensors` from a checkpoint folder (or the file itself) into `model`.

    Raises:
        FileNotFoundError: There is no such file.
        CheckpointError: The file is truncated, not safetensors, or its tensors do not fit the
            model (missing, extra or of another shape).
    """
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {file}")
    try:
        missing, unexpected = safetensors.torch.load_model(
            model, str(file), strict=False, device=str(device)
        )
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file}: {_safetensors_reason(error)}") from None
    except RuntimeError as error:  # shapes differ
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:])  # each tensor
        raise CheckpointError(f"{file} does not fit the model: {detail}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not fit the model: missing {missing}, extra {unexpected}"
        )


def _safetensors_reason(error: BaseException) -> str:
    text = _first_line(error)
    if "header" in text.lower() or "metadata" in text.lower() or "incomplete" in text.lower():
        return f"truncated or not a safetensors file ({text})"
    return text


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def resolve_weights(run_dir: str | Path, which: str = "best") -> Path:
    """The weights file `which` names: `best` (falls back to the latest step checkpoint, then
    to the imported weights), `last` (the latest step checkpoint, else the imported weights),
    `averaged`, `int8`, or a checkpoint folder / .safetensors path (absolute or in the run)."""
    run_dir = Path(run_dir)
    if which == "best" and (run_dir / BEST_DIR / WEIGHTS_FILE).is_file():
        return run_dir / BEST_DIR / WEIGHTS_FILE
    if which in ("best", "last"):
        latest = latest_checkpoint(run_dir)
        if latest is None and (run_dir / IMPORTED_DIR / WEIGHTS_FILE).is_file():
            return run_dir / IMPORTED_DIR / WEIGHTS_FILE
        if latest is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoints yet")
        return latest / WEIGHTS_FILE
    named = {"averaged": AVERAGED_DIR, "int8": INT8_DIR}
    path = run_dir / named[which] if which in named else Path(which)
    if not path.is_absolute() and not path.exists():
        path = run_dir / path
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no weights for {which!r}: {file} does not exist "
            "(use best, last, averaged, int8, or a checkpoint folder)"
        )
    return file


def load_model(
    run_dir: str | Path,
    which: str = "best",
    *,
    device: torch.device | str = "cpu",
    precision: str | None = None,
) -> tuple[Transformer | LanguageModel, RunConfig]:
    """Rebuild a run's model from its `config.yaml` and load the weights `which` names
    (see `resolve_weights`; `int8` is what `save_int8` wrote). The model is returned in eval
    mode, on `device`, in `precision` (`fp32`, `bf16`, `int8`; None: as stored).

    Raises:
        ValueError: A precision the stored weights cannot be turned into (int8 to anything else).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    if precision is not None:
        check_precision(precision)
    config = load_config(run_dir / CONFIG_FILE)
    model = build_model(config.model)
    file = resolve_weights(run_dir, which)
    if _metadata(file).get("format") == INT8_FORMAT:
        if precision not in (None, "int8"):
            raise ValueError(f"{file} holds int8 weights; they cannot be decoded in {precision}")
        if torch.device(device).type != "cpu":
            raise ValueError(f"{file} holds int8 weights, which run on the CPU only")
        to_inference_precision(model.eval(), "int8")
        load_int8_tensors(model, read_weights(file), source=str(file))
        return model, config
    load_weights(model, file, device=device)
    model = model.to(device).eval()
    return to_inference_precision(model, precision or "fp32"), config


def save_int8(model: nn.Module, out_dir: str | Path, *, source: str) -> Path:
    """Write an int8 model's tensors (`aiayn.model.precision.int8_tensors`) to
    `out_dir/model.safetensors`, durably; `source` (the fp32 weights it came from) is kept in
    the file's metadata. Returns the file."""
    if inference_precision(model) != "int8":
        raise ValueError("save_int8 needs a model converted to int8")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / WEIGHTS_FILE
    tmp = out_dir / f"{_TMP_PREFIX}{WEIGHTS_FILE}"
    metadata = {"format": INT8_FORMAT, "source": source}
    safetensors.torch.save_file(int8_tensors(model), str(tmp), metadata=metadata)
    fsync_file(tmp)
    rename_durably(tmp, file)
    return file


def _metadata(file: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(file), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file}: {_safetensors_reason(error)}") from None


def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch generator states, as JSON-ready values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": _encode(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_encode(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_decode(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode(s) for s in state["cuda"]])


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _save_weights(model: nn.Module, file: Path) -> None:
    safetensors.torch.save_model(model, str(file))
    fsync_file(file)


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(value, indent=1) + "\n")
        out.flush()
        os.fsync(out.fileno())
