"""`aiayn export --format onnx`: the encoder and the decoder step with its key/value cache as
graphs, which onnxruntime runs; greedy decoding through them gives our tokens exactly."""

from __future__ import annotations

import json

import pytest
import torch

from aiayn.api import load
from aiayn.cli import main
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import decode
from tests.tiny_runs import WORDS, tiny_run

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_onnx_greedy_decoding_gives_our_tokens(tmp_path, capsys):
    from aiayn.convert.onnx import LAYOUT_FILE, OnnxGreedy

    run_dir = tiny_run(tmp_path, translation=True, steps=60)
    main(["export", str(run_dir), "--format", "onnx", "-o", str(tmp_path / "onnx")])
    assert "wrote" in capsys.readouterr().out
    layout = json.loads((tmp_path / "onnx" / LAYOUT_FILE).read_text())
    assert layout["step_inputs"][:3] == ["tokens", "src_valid", "self_k_0"]
    model = load(run_dir)
    words = sorted(WORDS)
    sentences = [" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 6))
                 for i in range(16)]  # fmt: skip  # 1 to 6 words: padded batches
    eos, pad = model.config.model.eos_id, model.config.model.pad_id
    ids = [model.tokenizer.encode(s) + [eos] for s in sentences]
    longest = max(map(len, ids))
    src = torch.tensor([x + [pad] * (longest - len(x)) for x in ids])
    valid = src != pad
    ours = decode(model.model, src, valid, DecodeOptions(beam=1, max_len_a=1.5, max_len_b=5))
    theirs = OnnxGreedy(tmp_path / "onnx").decode(src, valid, max_len_a=1.5, max_len_b=5)
    assert theirs == ours
    assert len({tuple(x) for x in ours}) > 4  # the outputs differ: a real test of the cache
    # a batch of one sentence, unpadded
    n = int(valid[5].sum())
    alone = OnnxGreedy(tmp_path / "onnx").decode(src[5:6, :n], valid[5:6, :n])
    assert alone == decode(model.model, src[5:6, :n], valid[5:6, :n], DecodeOptions(beam=1))


def test_onnx_export_of_a_language_model_is_refused(tmp_path):
    lm = tiny_run(tmp_path, translation=False, steps=2)
    with pytest.raises(ValueError, match="this run holds a language model; it cannot translate"):
        load(lm).export(tmp_path / "onnx", format="onnx")
