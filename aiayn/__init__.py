"""aiayn: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017), from the paper."""

from aiayn.api import TextModel, load
from aiayn.model import (
    PRESETS,
    LanguageModel,
    ModelConfig,
    MultiHeadAttention,
    Transformer,
    attention,
    build_model,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "LanguageModel",
    "ModelConfig",
    "MultiHeadAttention",
    "TextModel",
    "Transformer",
    "attention",
    "build_model",
    "load",
]
