"""Encoder and decoder layers (§3.1): sub-layers wrapped in residual connections and LayerNorm.

Post-norm, as in the paper: LayerNorm(x + Dropout(Sublayer(x)))                     (§3.1, §5.4)
Pre-norm, an option (a departure; trains deeper stacks without warm-up tricks):
                            x + Dropout(Sublayer(LayerNorm(x)))
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from aiayn.model.attention import MultiHeadAttention
from aiayn.model.config import ModelConfig
from aiayn.model.embedding import RotaryEmbedding
from aiayn.model.feedforward import FeedForward
from aiayn.model.kv_cache import AnyKVCache


class Residual(nn.Module):
    """One sub-layer's residual connection with its LayerNorm, post-norm or pre-norm.

    Shape:
        x: (batch, len, d_model) -> (batch, len, d_model)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.norm_first = config.norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Multi-head self-attention, then a position-wise feed-forward network (§3.1, "Encoder").

    Shape:
        x: (batch, src_len, d_model), mask: broadcastable to (batch, heads, src_len, src_len)
        -> (batch, src_len, d_model)
    """

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(
            config.d_model, config.n_heads, d_k=config.d_k, dropout=config.attention_dropout,
            rotary=rotary,
        )  # fmt: skip
        self.feed_forward = FeedForward(
            config.d_model,
            config.d_ff,
            dropout=config.activation_dropout,
            activation=config.activation,
        )
        self.self_attn_residual = Residual(config)
        self.feed_forward_residual = Residual(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.self_attn_residual(x, lambda y: self.self_attn(y, mask=mask)[0])
        return self.feed_forward_residual(x, self.feed_forward)


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, then a feed-forward network
    (§3.1, "Decoder"). Without `cross_attention` this is a GPT-2 block (decoder-only).

    Shape:
        x: (batch, tgt_len, d_model); memory: (batch, src_len, d_model) or None;
        self_mask: broadcastable to (batch, heads, tgt_len, tgt_len [+ cached]);
        memory_mask: broadcastable to (batch, heads, tgt_len, src_len)
        -> (batch, tgt_len, d_model)
    """

    def __init__(
        self,
        config: ModelConfig,
        rotary: RotaryEmbedding | None = None,
        *,
        cross_attention: bool = True,
    ) -> None:
        super().__init__()
        d_model, n_heads, p = config.d_model, config.n_heads, config.attention_dropout
        d_k = config.d_k
        self.self_attn = MultiHeadAttention(d_model, n_heads, d_k=d_k, dropout=p, rotary=rotary)
        self.self_attn_residual = Residual(config)
        self.cross_attn = (
            MultiHeadAttention(d_model, n_heads, d_k=d_k, dropout=p) if cross_attention else None
        )
        self.cross_attn_residual = Residual(config) if cross_attention else None
        self.feed_forward = FeedForward(
            d_model, config.d_ff, dropout=config.activation_dropout, activation=config.activation
        )
        self.feed_forward_residual = Residual(config)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        self_cache: AnyKVCache | None = None,
        cross_cache: AnyKVCache | None = None,
    ) -> Tensor:
        x = self.self_attn_residual(
            x, lambda y: self.self_attn(y, mask=self_mask, cache=self_cache)[0]
        )
        if self.cross_attn is not None:
            x = self.cross_attn_residual(
                x, lambda y: self.cross_attn(y, memory, memory_mask, cache=cross_cache)[0]
            )
        return self.feed_forward_residual(x, self.feed_forward)
