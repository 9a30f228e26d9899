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
    runs: dict[str, Path],
    *,
    checkpoint: str = "best",
    device: str = "cpu",
    precision: str | None = None,
    compile: bool = False,
) -> dict[str, TextModel]:
    """Each run directory of `parse_model_specs`'s mapping loaded under its name, in
    `precision` (`fp32`, `bf16`, `int8`; None: as stored), translation models with their
    decoder step compiled if `compile` (`TextModel.compile`)."""
    models = {
        name: load(path, checkpoint, device=device, precision=precision)
        for name, path in runs.items()
    }
    for model in models.values():
        if compile and model.is_translation:
            model.compile()
    return models
