"""The Transformer and the language model: parity with torch.nn.Transformer, masks that never
leak (causality, padding), the KV cache, gradients, weights round trips and parameter counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_model, save_model
from torch import nn

from aiayn.model.config import ModelConfig
from aiayn.model.masks import causal_mask
from aiayn.model.transformer import LanguageModel, Transformer, build_model
from tests.model.conftest import VARIANTS, logits_of, random_tokens, tiny_config


def copy_mha(ours, ref: nn.MultiheadAttention) -> None:
    ref.in_proj_weight.copy_(
        torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
    )
    ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    ref.out_proj.weight.copy_(ours.out_proj.weight)
    ref.out_proj.bias.copy_(ours.out_proj.bias)


def copy_residual_blocks(ours, ref, attn_pairs, norms) -> None:
    for ours_attn, ref_attn in attn_pairs:
        copy_mha(ours_attn, ref_attn)
    for name in ("linear1", "linear2"):
        getattr(ref, name).load_state_dict(getattr(ours.feed_forward, name).state_dict())
    for ours_residual, ref_norm in norms:
        ref_norm.load_state_dict(ours_residual.norm.state_dict())


@torch.no_grad()
def torch_transformer_like(model: Transformer) -> nn.Transformer:
    """torch.nn.Transformer with our weights (post-norm, no final stack norms, no dropout)."""
    c = model.config
    ref = nn.Transformer(
        c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff, dropout=0.0,
        batch_first=True,
    )  # fmt: skip
    ref.encoder.norm, ref.decoder.norm = None, None  # the paper has none after post-norm stacks
    for ours, theirs in zip(model.encoder.layers, ref.encoder.layers, strict=True):
        copy_residual_blocks(
            ours, theirs, [(ours.self_attn, theirs.self_attn)],
            [(ours.self_attn_residual, theirs.norm1), (ours.feed_forward_residual, theirs.norm2)],
        )  # fmt: skip
    for ours, theirs in zip(model.decoder.layers, ref.decoder.layers, strict=True):
        copy_residual_blocks(
            ours, theirs,
            [(ours.self_attn, theirs.self_attn), (ours.cross_attn, theirs.multihead_attn)],
            [(ours.self_attn_residual, theirs.norm1), (ours.cross_attn_residual, theirs.norm2),
             (ours.feed_forward_residual, theirs.norm3)],
        )  # fmt: skip
    return ref.train()  # train mode with dropout 0: the exact math path, no nested tensors


def test_encoder_decoder_equals_torch_transformer():
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    ref = torch_transformer_like(model)
    src, tgt = random_tokens(3, 9, seed=1), random_tokens(3, 6, seed=2)
    src_valid = torch.ones_like(src, dtype=torch.bool)
    src_valid[1, 5:], src_valid[2, 2:] = False, False
    src = src.masked_fill(~src_valid, 0)
    ours = model(src, tgt, src_valid)
    theirs = model.out_proj(
        ref(
            model.src_embed(src),
            model.tgt_embed(tgt),
            tgt_mask=~causal_mask(6)[0, 0],
            src_key_padding_mask=~src_valid,
            memory_key_padding_mask=~src_valid,
        )  # fmt: skip
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [0, 3, 6])
def test_changing_future_targets_never_changes_the_past(model, t):
    src, tgt = random_tokens(2, 8, seed=1), random_tokens(2, 8, seed=2)
    changed = tgt.clone()
    changed[:, t + 1 :] = random_tokens(2, 8 - t - 1, seed=3)
    before, after = logits_of(model, src, tgt), logits_of(model, src, changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], atol=0, rtol=0)
    assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])


@settings(max_examples=15, deadline=None)
@given(
    variant=st.sampled_from(list(VARIANTS)),
    lengths=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 10)), min_size=2, max_size=5),
)
def test_padding_never_changes_a_sentences_outputs(variant, lengths):
    torch.manual_seed(0)
    model = build_model(VARIANTS[variant]).eval()
    src_len, tgt_len = max(s for s, _ in lengths), max(t for _, t in lengths)
    src = torch.zeros(len(lengths), src_len, dtype=torch.long)
    tgt = torch.zeros(len(lengths), tgt_len, dtype=torch.long)
    for i, (s, t) in enumerate(lengths):
        src[i, :s], tgt[i, :t] = random_tokens(1, s, seed=i)[0], random_tokens(1, t, seed=99 + i)[0]
    batch_logits = logits_of(model, src, tgt, src != 0, tgt != 0)
    for i, (s, t) in enumerate(lengths):
        alone = logits_of(model, src[i : i + 1, :s], tgt[i : i + 1, :t])
        torch.testing.assert_close(batch_logits[i : i + 1, :t], alone, atol=1e-5, rtol=1e-5)


def test_kv_cache_gives_the_full_forward_logits_at_every_step(model):
    src, tgt = random_tokens(2, 7, seed=1), random_tokens(2, 9, seed=2)
    full = logits_of(model, src, tgt)
    cache = model.new_cache()
    if model.config.kind == "encoder-decoder":
        src_valid = src != 0
        memory = model.encode(src, src_valid)
        steps = [model.decode(tgt[:, i : i + 1], memory, src_valid, cache=cache) for i in range(9)]
    else:
        # a 3-token prompt at once, then one token at a time
        steps = [model(tgt[:, :3], cache=cache)]
        steps += [model(tgt[:, i : i + 1], cache=cache) for i in range(3, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 9


def test_cache_reorder_follows_the_rows(model):
    src, tgt = random_tokens(3, 5, seed=1), random_tokens(3, 4, seed=2)
    order = torch.tensor([2, 0, 0])
    full = logits_of(model, src[order], tgt[order])
    cache = model.new_cache()
    if model.config.kind == "encoder-decoder":
        memory = model.encode(src)
        model.decode(tgt[:, :3], memory, src != 0, cache=cache)
        cache.reorder(order)
        last = model.decode(tgt[order, 3:], memory[order], src[order] != 0, cache=cache)
    else:
        model(tgt[:, :3], cache=cache)
        cache.reorder(order)
        last = model(tgt[order, 3:], cache=cache)
    torch.testing.assert_close(last[:, 0], full[:, 3], atol=1e-5, rtol=1e-5)


def test_every_parameter_receives_a_gradient(model):
    model.train()
    src, tgt = random_tokens(2, 6, seed=1), random_tokens(2, 5, seed=2)
    logits_of(model, src, tgt).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_round_trips_through_safetensors(model, tmp_path):
    save_model(model, tmp_path / "model.safetensors")
    torch.manual_seed(123)
    fresh = build_model(model.config).eval()
    load_model(fresh, tmp_path / "model.safetensors")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    src, tgt = random_tokens(2, 6, seed=1), random_tokens(2, 5, seed=2)
    assert torch.equal(logits_of(model, src, tgt), logits_of(fresh, src, tgt))


def test_fixed_seed_gives_identical_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return Transformer(tiny_config()).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["encoder.layers.0.self_attn.q_proj.weight"], c["encoder.layers.0.self_attn.q_proj.weight"]
    )


def analytic_count(c: ModelConfig) -> int:
    """Parameters of the encoder-decoder, from the paper's shapes."""
    d, f, v = c.d_model, c.d_ff, c.vocab_size
    attention = 4 * (d * d + d)  # W^Q, W^K, W^V, W^O with biases
    ffn = d * f + f + f * d + d  # W_1, b_1, W_2, b_2
    norm = 2 * d
    encoder = c.n_encoder_layers * (attention + ffn + 2 * norm)
    decoder = c.n_decoder_layers * (2 * attention + ffn + 3 * norm)
    tables = 1 + (not c.share_embeddings) + (not c.tie_output)
    return tables * v * d + encoder + decoder


@pytest.mark.parametrize("share, tie", [(True, True), (False, True), (False, False)])
def test_paper_base_parameter_count(share, tie):
    config = ModelConfig.preset("paper-base", share_embeddings=share, tie_output=tie)
    model = Transformer(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == analytic_count(config)
    if share and tie:
        assert n == 63_082_496  # the README's figure, next to the paper's "65M"


def test_paper_base_init_is_xavier_and_the_lm_is_gpt2s():
    torch.manual_seed(0)
    model = Transformer(tiny_config(d_model=64, d_ff=256))
    w = model.encoder.layers[
        0
    ].feed_forward.linear1.weight  # xavier: U(-a, a), a = sqrt(6/(64+256))
    bound = (6 / (64 + 256)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert (model.src_embed.tokens.weight[0] == 0).all()  # padding row
    lm = LanguageModel(tiny_config("decoder-only", d_model=64, d_ff=256))
    assert abs(lm.decoder.layers[0].feed_forward.linear1.weight.std().item() - 0.02) < 0.003
    residual = lm.decoder.layers[0].feed_forward.linear2.weight.std().item()
    assert abs(residual - 0.02 / 2) < 0.003  # 0.02 / sqrt(2 * n_layers), n_layers = 2


def test_tying_shares_one_table():
    model = Transformer(tiny_config())
    assert model.out_proj.weight is model.src_embed.tokens.weight
    assert model.tgt_embed.tokens is model.src_embed.tokens
    untied = Transformer(tiny_config(share_embeddings=False, tie_output=False))
    assert untied.out_proj.weight is not untied.tgt_embed.tokens.weight
    assert untied.tgt_embed.tokens is not untied.src_embed.tokens


def test_inputs_longer_than_the_positions_are_refused():
    model = Transformer(tiny_config(max_len=8))
    with pytest.raises(ValueError, match="9 positions exceeds the model's max_len \\(8\\)"):
        model(random_tokens(1, 9), random_tokens(1, 3))
