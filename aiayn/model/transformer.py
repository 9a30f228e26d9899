"""The encoder-decoder Transformer (§3, Figure 1) and the decoder-only language model (GPT-2).

Both return logits, never a loss. `Transformer.encode` / `Transformer.decode` are the seam that
decoding (greedy, beam search) uses; a `DecoderCache` makes decoding incremental.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from aiayn.model.config import ModelConfig
from aiayn.model.embedding import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    TokenEmbedding,
)
from aiayn.model.kv_cache import DecoderCache, StaticDecoderCache
from aiayn.model.layers import DecoderLayer, EncoderLayer
from aiayn.model.masks import decoder_mask, padding_mask


class Encoder(nn.Module):
    """A stack of N encoder layers (§3.1); pre-norm stacks end with a LayerNorm.

    Shape:
        x: (batch, src_len, d_model), mask: (batch, 1, 1, src_len) -> (batch, src_len, d_model)
    """

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(config, rotary) for _ in range(config.n_encoder_layers)
        )
        self.norm = (
            nn.LayerNorm(config.d_model, config.layer_norm_eps) if config.norm_first else None
        )

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)


class Decoder(nn.Module):
    """A stack of N decoder layers (§3.1); pre-norm stacks end with a LayerNorm.

    Shape:
        x: (batch, tgt_len, d_model), memory: (batch, src_len, d_model) or None
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
        self.layers = nn.ModuleList(
            DecoderLayer(config, rotary, cross_attention=cross_attention)
            for _ in range(config.n_decoder_layers)
        )
        self.norm = (
            nn.LayerNorm(config.d_model, config.layer_norm_eps) if config.norm_first else None
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        self_mask: Tensor | None,
        memory_mask: Tensor | None,
        cache: DecoderCache | StaticDecoderCache | None = None,
    ) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory,
                self_mask,
                memory_mask,
                self_cache=None if cache is None else cache.self_attn[i],
                cross_cache=None if cache is None else cache.cross_attn[i],
            )
        return x if self.norm is None else self.norm(x)


class Embedder(nn.Module):
    """Token embedding + positions, then dropout (§3.4, §3.5, §5.4).

    Shape:
        tokens: (batch, len), offset: position of the first token -> (batch, len, d_model)
    """

    def __init__(self, config: ModelConfig, tokens: TokenEmbedding) -> None:
        super().__init__()
        self.tokens = tokens
        if config.positions == "sinusoidal":
            self.positions: nn.Module | None = SinusoidalPositions(
                config.max_len, config.d_model, config.sinusoid_layout
            )
        elif config.positions == "learned":
            self.positions = LearnedPositions(config.max_len, config.d_model)
        else:  # rope rotates queries and keys inside attention instead
            self.positions = None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        x = self.tokens(tokens)
        if self.positions is not None:
            x = self.positions(x, offset)
        return self.dropout(x)


class Transformer(nn.Module):
    """The encoder-decoder of Figure 1, with the paper's weight sharing (§3.4): one embedding
    table for source and target (`share_embeddings`) and the pre-softmax projection tied to it
    (`tie_output`).

    Shape:
        src: (batch, src_len), tgt_in: (batch, tgt_len) starting with BOS;
        src_valid / tgt_valid: (batch, len) bool, True on real tokens
        -> logits (batch, tgt_len, vocab_size)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind != "encoder-decoder":
            raise ValueError(f"Transformer needs kind='encoder-decoder', got {config.kind!r}")
        self.config = config
        src_tokens = new_token_embedding(config)
        tgt_tokens = src_tokens if config.share_embeddings else new_token_embedding(config)
        rotary = new_rotary(config)
        self.src_embed = Embedder(config, src_tokens)
        self.tgt_embed = Embedder(config, tgt_tokens)
        self.encoder = Encoder(config, rotary)
        self.decoder = Decoder(config, rotary, cross_attention=True)
        self.out_proj = nn.Linear(config.d_model, config.vocab_size, bias=config.output_bias)
        if config.tie_output:
            self.out_proj.weight = tgt_tokens.weight
        init_weights(self, config)

    def encode(self, src: Tensor, src_valid: Tensor | None = None) -> Tensor:
        """Source ids -> memory (batch, src_len, d_model). `src_valid` defaults to src != pad."""
        src_valid = src != self.config.pad_id if src_valid is None else src_valid
        return self.encoder(self.src_embed(src), padding_mask(src_valid))

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        src_valid: Tensor | None,
        *,
        tgt_valid: Tensor | None = None,
        cache: DecoderCache | StaticDecoderCache | None = None,
    ) -> Tensor:
        """Target prefix -> logits (batch, tgt_len, vocab_size) for the next tokens.

        With a cache, `tgt_in` holds only the new positions; `tgt_valid`, if given, covers all
        positions so far (batch, cached + tgt_len).
        """
        offset = 0 if cache is None else cache.length
        x = self.tgt_embed(tgt_in, offset)
        self_mask = self_attention_mask(tgt_in, tgt_valid, cache)
        memory_mask = None if src_valid is None else padding_mask(src_valid)
        return self.out_proj(self.decoder(x, memory, self_mask, memory_mask, cache))

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_valid: Tensor | None = None,
        tgt_valid: Tensor | None = None,
    ) -> Tensor:
        src_valid = src != self.config.pad_id if src_valid is None else src_valid
        memory = self.encode(src, src_valid)
        return self.decode(tgt_in, memory, src_valid, tgt_valid=tgt_valid)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder.layers))


class LanguageModel(nn.Module):
    """A decoder-only Transformer (GPT-2 style): masked self-attention blocks without
    encoder-decoder attention, the output projection tied to the token embedding.

    Shape:
        tokens: (batch, len); valid: (batch, cached + len) bool or None
        -> logits (batch, len, vocab_size)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind != "decoder-only":
            raise ValueError(f"LanguageModel needs kind='decoder-only', got {config.kind!r}")
        self.config = config
        tokens = new_token_embedding(config)
        self.embed = Embedder(config, tokens)
        self.decoder = Decoder(config, new_rotary(config), cross_attention=False)
        self.out_proj = nn.Linear(config.d_model, config.vocab_size, bias=config.output_bias)
        if config.tie_output:
            self.out_proj.weight = tokens.weight
        init_weights(self, config)

    def forward(
        self,
        tokens: Tensor,
        valid: Tensor | None = None,
        *,
        cache: DecoderCache | StaticDecoderCache | None = None,
    ) -> Tensor:
        offset = 0 if cache is None else cache.length
        x = self.embed(tokens, offset)
        mask = self_attention_mask(tokens, valid, cache)
        return self.out_proj(self.decoder(x, None, mask, None, cache))

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder.layers))


def self_attention_mask(
    tokens: Tensor, valid: Tensor | None, cache: DecoderCache | StaticDecoderCache | None
) -> Tensor | None:
    """The decoder's self-attention mask for `tokens` (batch, q_len), the new positions after
    those the cache holds: causal, and over `valid` (batch, cached + q_len) where given.

    Returns None where nothing is masked (one new position that sees every position so far);
    over a `StaticDecoderCache`, the buffer positions written so far (1, 1, q_len, capacity).
    """
    q_len = tokens.size(1)
    if isinstance(cache, StaticDecoderCache):
        if valid is not None:
            raise ValueError("a static cache decodes rows without padding (valid=None)")
        return cache.visible(q_len)
    if q_len == 1 and valid is None:
        return None
    offset = 0 if cache is None else cache.length
    return decoder_mask(q_len, offset + q_len, valid, tokens.device)


def build_model(config: ModelConfig) -> Transformer | LanguageModel:
    """The model `config.kind` names."""
    return Transformer(config) if config.kind == "encoder-decoder" else LanguageModel(config)


def new_token_embedding(config: ModelConfig) -> TokenEmbedding:
    return TokenEmbedding(
        config.vocab_size, config.d_model, pad_id=config.pad_id, scale=config.scale_embeddings
    )


def new_rotary(config: ModelConfig) -> RotaryEmbedding | None:
    return RotaryEmbedding(config.max_len, config.d_key) if config.positions == "rope" else None


@torch.no_grad()
def init_weights(model: nn.Module, config: ModelConfig) -> None:
    """`xavier`: Xavier-uniform linear maps, zero biases, embeddings N(0, d_model^-0.5) with a
    zero padding row (fairseq). `gpt2`: N(0, 0.02) everywhere, residual output projections
    scaled by 1/sqrt(2 * n_layers) (GPT-2 paper, §2.3). LayerNorms start at (1, 0)."""
    n_layers = config.n_encoder_layers + config.n_decoder_layers
    residual_std = 0.02 / math.sqrt(2 * n_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif name.endswith(("attn.out_proj", "linear2")):
                nn.init.normal_(module.weight, std=residual_std)
            else:
                nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    # Embeddings last: a tied output projection shares their weight.
    for module in model.modules():
        if isinstance(module, (TokenEmbedding, LearnedPositions)):
            std = config.d_model**-0.5 if config.init == "xavier" else 0.02
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, TokenEmbedding):
            module.weight[module.pad_id].zero_()
