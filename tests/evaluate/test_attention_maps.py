"""Attention maps: weights per layer and head are proper distributions over the keys a query
may see, plots land as PNG files, and matplotlib is imported only when drawing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from aiayn.evaluate.attention_maps import AttentionMaps, attention_weights
from tests.generate.models import BOS, EOS, tiny_model


def maps_of(model) -> AttentionMaps:
    src = torch.tensor([[5, 6, 7, EOS]])
    tgt_in = torch.tensor([[BOS, 8, 9]])
    weights = attention_weights(model, src, tgt_in)
    return AttentionMaps(
        source_pieces=["▁a", "b", "c", "</s>"],
        output_pieces=["x", "y", "</s>"],
        input_pieces=["<s>", "x", "y"],
        **weights,
    )


def test_weights_have_one_map_per_layer_and_head_and_rows_sum_to_one():
    model = tiny_model(n_encoder_layers=2, n_decoder_layers=3)
    maps = maps_of(model)
    assert maps.encoder_self.shape == (2, 2, 4, 4)
    assert maps.decoder_self.shape == (3, 2, 3, 3)
    assert maps.cross.shape == (3, 2, 3, 4)
    for weights in (maps.encoder_self, maps.decoder_self, maps.cross):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    future = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    assert (maps.decoder_self[..., future] == 0).all()  # §3.2.3: no leftward flow
    assert all(
        not layer.self_attn.keep_weights and layer.self_attn.weights is None
        for layer in model.decoder.layers
    )


def test_language_model_weights_are_decoder_self_attention_only():
    lm = tiny_model("decoder-only")
    weights = attention_weights(lm, None, torch.tensor([[5, 6, 7, 8, 9]]))
    assert weights["encoder_self"] is None and weights["cross"] is None
    assert weights["decoder_self"].shape == (2, 2, 5, 5)


def test_plot_writes_a_png_per_kind_and_layer_for_the_chosen_heads(tmp_path):
    pytest.importorskip("matplotlib")
    maps = maps_of(tiny_model())
    written = maps.plot(tmp_path / "maps", layers=[-1], heads=[0, 1])
    names = sorted(p.name for p in written)
    assert names == ["cross-layer1.png", "decoder-self-layer1.png", "encoder-self-layer1.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="head \\[5\\] out of range"):
        maps.plot(tmp_path, heads=[5])


def test_matplotlib_is_imported_only_when_drawing():
    code = (
        "import sys, aiayn.evaluate.attention_maps\n"
        "assert 'matplotlib' not in sys.modules, 'imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
