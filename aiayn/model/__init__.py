"""The paper's model on torch primitives: attention, layers, Transformer, language model."""

from aiayn.model.attention import MultiHeadAttention, attention
from aiayn.model.config import PRESETS, ModelConfig
from aiayn.model.embedding import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    TokenEmbedding,
)
from aiayn.model.feedforward import FeedForward
from aiayn.model.kv_cache import DecoderCache, KVCache
from aiayn.model.layers import DecoderLayer, EncoderLayer
from aiayn.model.transformer import Decoder, Encoder, LanguageModel, Transformer, build_model

__all__ = [
    "PRESETS",
    "Decoder",
    "DecoderCache",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LanguageModel",
    "LearnedPositions",
    "ModelConfig",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "SinusoidalPositions",
    "TokenEmbedding",
    "Transformer",
    "attention",
    "build_model",
]
