"""Encoder and decoder layers (§3.1): post-norm as the paper (LayerNorm(x + Sublayer(x))),
pre-norm as an option, against the formulas written out, and a decoder-only block without
cross-attention."""

from __future__ import annotations

import pytest
import torch

from aiayn.model.config import ModelConfig
from aiayn.model.layers import DecoderLayer, EncoderLayer, Residual
from aiayn.model.masks import causal_mask, padding_mask


def config(**changes) -> ModelConfig:
    return ModelConfig(vocab_size=11, d_model=16, n_heads=2, d_ff=32, dropout=0.0, **changes)


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_is_the_papers_post_norm_or_the_pre_norm_option(norm_first):
    residual = Residual(config(norm_first=norm_first))
    with torch.no_grad():
        residual.norm.weight.uniform_(0.5, 1.5)
        residual.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 16)

    def sublayer(y):
        return 2.0 * y + 1.0

    norm = residual.norm
    expected = x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))
    torch.testing.assert_close(residual(x, sublayer), expected)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_is_attention_then_feed_forward_each_in_a_residual(norm_first):
    torch.manual_seed(0)
    layer = EncoderLayer(config(norm_first=norm_first)).eval()
    x, mask = torch.randn(2, 5, 16), padding_mask(torch.tensor([[1, 1, 1, 1, 0], [1] * 5]).bool())
    attn_res, ff_res = layer.self_attn_residual, layer.feed_forward_residual
    h = attn_res(x, lambda y: layer.self_attn(y, mask=mask)[0])
    torch.testing.assert_close(layer(x, mask), ff_res(h, layer.feed_forward))
    # padding keys change nothing for real queries
    changed = x.clone()
    changed[0, 4] = 100.0
    torch.testing.assert_close(layer(changed, mask)[0, :4], layer(x, mask)[0, :4])


def test_decoder_layer_attends_to_the_memory_and_not_to_the_future():
    torch.manual_seed(1)
    layer = DecoderLayer(config()).eval()
    x, memory = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    out = layer(x, memory, causal_mask(4))
    future = x.clone()
    future[0, 3] = 5.0  # the last position changes: earlier outputs must not
    torch.testing.assert_close(layer(future, memory, causal_mask(4))[0, :3], out[0, :3])
    assert not torch.allclose(layer(x, memory + 1.0, causal_mask(4)), out)  # memory is read
    block = DecoderLayer(config(), cross_attention=False)  # GPT-2 style: no cross-attention
    assert block.cross_attn is None and block.cross_attn_residual is None
    assert block(x, None, causal_mask(4)).shape == (1, 4, 16)
