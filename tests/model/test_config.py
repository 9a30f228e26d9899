"""ModelConfig: presets and the errors bad values get."""

from __future__ import annotations

import pytest

from aiayn.model.config import PRESETS, ModelConfig


def test_presets_are_the_papers():
    base, big = ModelConfig.preset("paper-base"), ModelConfig.preset("paper-big")
    assert (base.d_model, base.n_heads, base.d_ff, base.n_encoder_layers) == (512, 8, 2048, 6)
    assert (base.n_decoder_layers, base.dropout, base.d_head) == (6, 0.1, 64)
    assert (big.d_model, big.n_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)
    gpt2 = ModelConfig.preset("gpt2-small")
    assert (gpt2.d_model, gpt2.n_heads, gpt2.n_decoder_layers, gpt2.max_len) == (768, 12, 12, 1024)
    assert gpt2.kind == "decoder-only" and gpt2.norm_first and gpt2.activation == "gelu"
    assert "cpu-small" in PRESETS


def test_preset_overrides_and_unknown_name():
    assert ModelConfig.preset("paper-base", vocab_size=100).vocab_size == 100
    with pytest.raises(ValueError, match="unknown model preset 'paper-huge'.*paper-base"):
        ModelConfig.preset("paper-huge")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be divisible by n_heads \(4\)"),
        ({"vocab_size": 3}, r"eos_id \(3\) outside the vocabulary \(size 3\)"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"kind": "encoder"}, "kind must be"),
        ({"positions": "rope", "d_model": 12, "n_heads": 4}, "even d_k"),
    ],
)
def test_bad_values_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


def test_d_k_defaults_to_d_model_over_h_and_is_checked():
    assert ModelConfig(d_model=64, n_heads=4).d_key == 16
    assert ModelConfig(d_model=64, n_heads=4, d_k=8).d_key == 8
    with pytest.raises(ValueError, match="d_k must be positive"):
        ModelConfig(d_model=64, n_heads=4, d_k=0)
    with pytest.raises(ValueError, match="rotary positions need an even d_k, got 5"):
        ModelConfig(d_model=64, n_heads=4, d_k=5, positions="rope")


@pytest.mark.parametrize(
    ("field", "typo"),
    [("positions", "sinusoid"), ("sinusoid_layout", "concatenated"), ("init", "foo"),
     ("activation", "RELU"), ("kind", "encoder")],
)  # fmt: skip
def test_a_mistyped_choice_from_python_is_refused_not_silently_replaced(field, typo):
    with pytest.raises(ValueError, match=f"{field} must be one of .*, got '{typo}'"):
        ModelConfig(**{field: typo})
