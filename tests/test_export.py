"""`aiayn export --format hf-marian` (aiayn/convert/marian.py): transformers' MarianMTModel,
loaded from the exported folder, computes our logits."""

from __future__ import annotations

import json

import pytest
import torch

from aiayn.cli import main
from aiayn.convert.marian import check_exportable, export_hf_marian, marian_permutation
from aiayn.model.transformer import Transformer
from tests.model.conftest import random_tokens, tiny_config
from tests.tiny_runs import tiny_run

transformers = pytest.importorskip(
    "transformers", reason="transformers is needed to load the export (pip install '.[dev]')"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_permutation_puts_sines_first():
    assert marian_permutation(tiny_config(d_model=6, n_heads=2)).tolist() == [0, 2, 4, 1, 3, 5]
    halves = tiny_config(d_model=6, n_heads=2, sinusoid_layout="halves")
    assert marian_permutation(halves).tolist() == [0, 1, 2, 3, 4, 5]


def test_marian_loaded_from_the_export_gives_our_logits(tmp_path):
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    export_hf_marian(model, tmp_path)
    marian = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    src, tgt_in = random_tokens(3, 9, seed=1), random_tokens(3, 6, seed=2)
    src[1, 5:], src[2, 2:] = 0, 0
    with torch.no_grad():
        ours = model(src, tgt_in)
        theirs = marian(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # The positions we wrote are the ones Marian computes itself (sines first, then cosines),
    # so a consumer that recomputes them instead of reading them gets the same model.
    fresh = transformers.MarianMTModel(marian.config)
    for stack in ("encoder", "decoder"):
        torch.testing.assert_close(
            getattr(marian.model, stack).embed_positions.weight,
            getattr(fresh.model, stack).embed_positions.weight,
        )


def test_options_marian_cannot_express_are_named():
    with pytest.raises(ValueError, match=r"model.norm_first=True \(needs False\)"):
        check_exportable(tiny_config(norm_first=True))
    with pytest.raises(ValueError, match=r"model.positions='rope'"):
        check_exportable(tiny_config(positions="rope"))
    with pytest.raises(ValueError, match=r"model.d_k=4 \(needs d_model / n_heads, 8\)"):
        check_exportable(tiny_config(d_k=4))


def test_onnx_and_gpt2_refuse_a_smaller_key_size():
    from aiayn.convert.gpt2 import check_exportable as gpt2_exportable
    from aiayn.convert.onnx import export_onnx
    from aiayn.model.transformer import build_model

    with pytest.raises(ValueError, match="onnx export needs d_k = d_model / n_heads"):
        export_onnx(build_model(tiny_config(d_k=4)), None, "unused")
    lm = tiny_config("decoder-only", d_k=4, norm_first=True, positions="learned",
                     scale_embeddings=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"cannot export as hf-gpt2: d_k=4 \(GPT-2"):
        gpt2_exportable(lm)


def test_export_command_writes_weights_config_and_vocabulary(tmp_path):
    run_dir = tiny_run(tmp_path, translation=True, steps=2)
    main(["export", str(run_dir), "--checkpoint", "last", "-o", str(tmp_path / "hf")])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "marian" and config["decoder_start_token_id"] == 2
    vocab = json.loads((tmp_path / "hf" / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and len(vocab) == config["vocab_size"]
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "hf" / "source.spm").read_bytes() == (
        run_dir / "tokenizer.model"
    ).read_bytes()


def test_a_model_of_ours_goes_out_to_marian_and_back_in(tmp_path):
    from aiayn.api import import_pretrained, load

    run_dir = tiny_run(tmp_path, translation=True, steps=30)
    ours = load(run_dir)
    ours.export(tmp_path / "hf", format="hf-marian")
    back = load(import_pretrained("hf-marian", tmp_path / "hf", tmp_path / "back"))
    assert back.config.model.sinusoid_layout == "halves"  # our interleaved dims, permuted
    assert (back.config.model.bos_id, back.config.model.pad_id) == (2, 0)  # our decoder start
    real = ours.config.model.vocab_size - 4  # ids past the four specials
    src, tgt_in = random_tokens(3, 9, seed=1) % real + 4, random_tokens(3, 6, seed=2) % real + 4
    with torch.no_grad():
        torch.testing.assert_close(back.model(src, tgt_in), ours.model(src, tgt_in))
    sentences = ["der hund läuft im garten", "katze", "rot blau haus"]
    assert back.translate(sentences, beam=2) == ours.translate(sentences, beam=2)
    assert load(tmp_path / "back").tokenizer.bos_id == 2  # kept in the run directory
