"""`aiayn serve`: the models of run directories behind HTTP (FastAPI + uvicorn), with dynamic
batching, limits on every request, and a page that translates, generates and shows attention.
Needs the `serve` extra: `pip install 'aiayn[serve]'`."""

from __future__ import annotations

from pathlib import Path

from aiayn.api import TextModel, load


def parse_model_specs(specs: list[str]) -> dict[str, Path]:
    """`RUN_DIR` or `NAME=RUN_DIR` -> {name: run directory}; a bare run directory is served
    under its folder's name. Names must be unique and URL-safe."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).resolve().name, spec
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"{spec}: a model name may hold letters, digits, '-', '_', '.'")
        if name in models:
            raise ValueError(f"{spec}: two models named {name!r}; name them with NAME=RUN_DIR")
        models[name] = Path(path)
    return models


def load_models(
    specs: list[str], *, checkpoint: str = "best", device: str = "cpu"
) -> dict[str, TextModel]:
    """Each `RUN_DIR` / `NAME=RUN_DIR` loaded (see `parse_model_specs`)."""
    return {
        name: load(path, checkpoint, device=device)
        for name, path in parse_model_specs(specs).items()
    }
