"""Reading a HuggingFace model folder: `config.json` and the weights (`model.safetensors`, else
`pytorch_model.bin` loaded with `weights_only=True`), every failure named by its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor


def read_config(folder: Path) -> dict[str, Any]:
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{folder} is not a HuggingFace model folder: no config.json")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: not a model configuration")
    return config


def read_weights(folder: Path) -> dict[str, Tensor]:
    """`model.safetensors`, else `pytorch_model.bin` (loaded with `weights_only=True`)."""
    from aiayn.train.checkpoint import load_tensors
    from aiayn.train.checkpoint import read_weights as read_safetensors

    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    file = folder / "pytorch_model.bin"
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    weights = load_tensors(file)
    if not isinstance(weights, dict):
        raise ValueError(f"{file}: not a state dict")
    return weights
