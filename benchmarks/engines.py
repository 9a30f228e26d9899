"""The encoder-decoders we race: aiayn, one built from torch.nn.Transformer, and HuggingFace's
MarianMTModel, all with the same sizes, the same tied 3-way embeddings and sinusoidal positions.

Every engine is a module mapping (src, tgt_in) to logits (batch, tgt_len, vocab), padding id 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

PAD, BOS, EOS = 0, 2, 3


@dataclass(frozen=True)
class Size:
    """One benchmark model size (the encoder-decoder of the paper, §3)."""

    name: str
    vocab_size: int
    d_model: int
    n_heads: int
    d_ff: int
    n_layers: int  # encoder and decoder each

    def flops_per_token(self, src_len: float, tgt_len: float) -> tuple[float, float]:
        """Forward FLOPs (2 per multiply-add) per real source token and per real target token,
        counting the projections, feed-forward, attention products and the output softmax layer.
        """
        d, f, n = self.d_model, self.d_ff, self.n_layers
        per_src = n * (2 * 4 * d * d + 2 * 2 * d * f + 2 * 2 * src_len * d)  # encoder layers
        per_src += n * 2 * 2 * d * d  # decoder cross-attention keys and values of the memory
        per_tgt = n * (
            2 * 4 * d * d  # self-attention projections
            + 2 * 2 * d * d  # cross-attention query and output projections
            + 2 * 2 * d * f  # feed-forward
            + 2 * 2 * tgt_len * d  # self-attention scores and weighted sum
            + 2 * 2 * src_len * d  # cross-attention scores and weighted sum
        )
        per_tgt += 2 * d * self.vocab_size  # pre-softmax projection
        return per_src, per_tgt


SIZES = {
    "multi30k": Size("multi30k", 8000, 256, 4, 1024, 3),
    "paper-base": Size("paper-base", 37000, 512, 8, 2048, 6),
}


def build_aiayn(size: Size, dropout: float) -> nn.Module:
    from aiayn.model.config import ModelConfig
    from aiayn.model.transformer import Transformer

    config = ModelConfig(
        vocab_size=size.vocab_size, d_model=size.d_model, n_heads=size.n_heads, d_ff=size.d_ff,
        n_encoder_layers=size.n_layers, n_decoder_layers=size.n_layers, dropout=dropout,
        max_len=512,
    )  # fmt: skip
    model = Transformer(config)
    return Adapter(lambda src, tgt_in: model(src, tgt_in), model)


class TorchTransformer(nn.Module):
    """An encoder-decoder on torch.nn.Transformer, as PyTorch's tutorial builds it."""

    def __init__(self, size: Size, dropout: float) -> None:
        super().__init__()
        from aiayn.model.embedding import sinusoids

        self.embed = nn.Embedding(size.vocab_size, size.d_model, padding_idx=PAD)
        self.register_buffer("pe", sinusoids(512, size.d_model), persistent=False)
        self.transformer = nn.Transformer(
            size.d_model, size.n_heads, size.n_layers, size.n_layers, size.d_ff, dropout,
            batch_first=True,
        )  # fmt: skip
        self.out = nn.Linear(size.d_model, size.vocab_size, bias=False)
        self.out.weight = self.embed.weight
        self.dropout = nn.Dropout(dropout)
        self.scale = math.sqrt(size.d_model)

    def embed_positions(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.embed(tokens) * self.scale + self.pe[: tokens.size(1)])

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), tgt_in.device)
        src_pad = src == PAD
        out = self.transformer(
            self.embed_positions(src), self.embed_positions(tgt_in), tgt_mask=causal,
            src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_in == PAD,
            memory_key_padding_mask=src_pad, tgt_is_causal=True,
        )  # fmt: skip
        return self.out(out)


def build_torch(size: Size, dropout: float) -> nn.Module:
    return TorchTransformer(size, dropout)


def build_marian(size: Size, dropout: float) -> nn.Module:
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(
        vocab_size=size.vocab_size, d_model=size.d_model, encoder_layers=size.n_layers,
        decoder_layers=size.n_layers, encoder_attention_heads=size.n_heads,
        decoder_attention_heads=size.n_heads, encoder_ffn_dim=size.d_ff,
        decoder_ffn_dim=size.d_ff, max_position_embeddings=512, dropout=dropout,
        attention_dropout=0.0, activation_dropout=0.0, activation_function="relu",
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=BOS, scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    )  # fmt: skip
    model = MarianMTModel(config)

    def forward(src: Tensor, tgt_in: Tensor) -> Tensor:
        return model(
            input_ids=src, attention_mask=src != PAD, decoder_input_ids=tgt_in,
            decoder_attention_mask=tgt_in != PAD, use_cache=False,
        ).logits  # fmt: skip

    return Adapter(forward, model)


class Adapter(nn.Module):
    """Wraps a model whose call signature differs into (src, tgt_in) -> logits."""

    def __init__(self, forward, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self._forward(src, tgt_in)


BUILDERS = {"aiayn": build_aiayn, "torch": build_torch, "marian": build_marian}
