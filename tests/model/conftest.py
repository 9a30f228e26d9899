"""Tiny models, parametrised over the two model kinds, post/pre-norm and the position kinds."""

from __future__ import annotations

import pytest
import torch

from aiayn.model.config import ModelConfig
from aiayn.model.transformer import build_model

VOCAB = 23


def tiny_config(kind: str = "encoder-decoder", **changes) -> ModelConfig:
    base = dict(
        kind=kind, vocab_size=VOCAB, d_model=32, n_heads=4, d_ff=64, n_encoder_layers=2,
        n_decoder_layers=2, dropout=0.0, max_len=64,
    )  # fmt: skip
    if kind == "decoder-only":
        base.update(norm_first=True, positions="learned", activation="gelu", init="gpt2")
    base.update(changes)
    return ModelConfig(**base)


VARIANTS = {
    "post-norm": tiny_config(),
    "pre-norm": tiny_config(norm_first=True),
    "learned": tiny_config(positions="learned"),
    "rope": tiny_config(positions="rope"),
    "untied": tiny_config(share_embeddings=False, tie_output=False),
    "small-dk": tiny_config(d_k=4),  # Table 3 (B): d_k 4 < d_model / h = 8
    "rope-dk": tiny_config(positions="rope", d_k=6),
    "lm": tiny_config("decoder-only"),
    "lm-rope": tiny_config("decoder-only", positions="rope"),
}


@pytest.fixture(params=list(VARIANTS))
def model(request):
    torch.manual_seed(0)
    return build_model(VARIANTS[request.param]).eval()


def random_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=g)


def logits_of(model, src, tgt, src_valid=None, tgt_valid=None):
    """Full forward pass of either model kind (the LM reads `tgt` only)."""
    if model.config.kind == "decoder-only":
        return model(tgt, tgt_valid)
    return model(src, tgt, src_valid, tgt_valid)
