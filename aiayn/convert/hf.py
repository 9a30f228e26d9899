"""Reading a HuggingFace model folder: `config.json` and the weights (`model.safetensors`, else
`pytorch_model.bin` loaded with `weights_only=True`), every failure named by its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
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
    from aiayn.train.checkpoint import read_weights as read_safetensors

    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    file = folder / "pytorch_model.bin"
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    try:
        weights = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused, truncated zip, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in first:
            first = "it holds Python objects, which would run code when loaded; refused"
        raise ValueError(f"{file}: not a plain tensor file ({first})") from None
    if not isinstance(weights, dict):
        raise ValueError(f"{file}: not a state dict")
    return weights
