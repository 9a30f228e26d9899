"""The one path from sentences to translations (aiayn/translate.py): validation during training
and `aiayn evaluate` run it alike, blank lines and long inputs are handled in one place, and
its decoder follows the DecodeOptions."""

from __future__ import annotations

import pytest
import torch

import aiayn
from aiayn.generate.options import DecodeOptions
from aiayn.train.log import read_metrics
from aiayn.train.loop import train
from aiayn.translate import encode_sources, fit_to_positions, translate_texts
from tests.train.tiny_data import tiny_config, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    train_section = {"max_steps": 200, "bleu": True, "log_every": 50}
    config = tiny_config(corpus, train=train_section, model={"dropout": 0.0})
    run_dir = tmp_path_factory.mktemp("run")
    train(config, run_dir=run_dir, progress=False)
    return run_dir, corpus


def test_validation_bleu_equals_aiayn_evaluate_on_the_same_checkpoint_and_split(run):
    run_dir, corpus = run
    valid = [r for r in read_metrics(run_dir) if r["kind"] == "valid"][-1]
    model = aiayn.load(run_dir, "last")
    result = model.evaluate(files=[corpus / "valid.de", corpus / "valid.en"], beam=1)
    assert result.bleu.score == valid["bleu"] and result.chrf.score == valid["chrf"]
    assert result.bleu.signature == valid["bleu_signature"]
    assert 0 < valid["bleu"] < 100  # a real comparison: neither empty nor trivially perfect


def test_blank_lines_give_empty_outputs_and_the_rest_is_in_input_order(run):
    model = aiayn.load(run[0], "last")
    sources = ["hund", "", "der mann läuft", "   ", "katze"]
    options = DecodeOptions(beam=1)
    out = translate_texts(model.model, model.tokenizer, sources, options)
    assert out[1] == out[3] == "" and len(out) == 5
    alone = [translate_texts(model.model, model.tokenizer, [s], options)[0] for s in sources]
    assert out == alone
    # tiny batches decode the same sentences the same way
    assert translate_texts(model.model, model.tokenizer, sources, options, max_tokens=1) == out


def test_long_inputs_are_cut_with_a_warning_or_refused_in_one_place():
    assert fit_to_positions([1, 2, 3], 3, "error", "x", positions=4) == [1, 2, 3]
    with pytest.warns(
        UserWarning, match=r"input 2 has 5 tokens, .* 5 positions allow \(4\); kept its first 4"
    ):
        assert fit_to_positions([1, 2, 3, 4, 5], 4, "truncate", "input 2", positions=5) == [
            1,
            2,
            3,
            4,
        ]
    with pytest.warns(UserWarning, match="kept its last 2"):
        assert fit_to_positions([1, 2, 3], 2, "truncate", "prompt", positions=2, keep_end=True) == [
            2,
            3,
        ]
    with pytest.raises(ValueError, match="long_input='truncate'"):
        fit_to_positions([1, 2, 3], 2, "error", "input 1", positions=3)


def test_sources_are_encoded_with_room_for_eos(run):
    tokenizer = aiayn.load(run[0], "last").tokenizer
    with pytest.warns(UserWarning, match="input 3 has 180 tokens"):
        ids = encode_sources(tokenizer, ["hund", " ", "katze " * 30], max_len=20, policy="truncate")
    assert ids[0] == tokenizer.encode("hund") and ids[1] == [] and len(ids[2]) == 19


def test_the_decoder_follows_the_options(run):
    from aiayn.generate.search import beam_search, decode, greedy_search

    model = aiayn.load(run[0], "last").model
    src = torch.tensor([[10, 11, 12, 3], [13, 3, 0, 0]])
    eos = model.config.eos_id

    def cut(row: list[int]) -> list[int]:
        return row[: row.index(eos)] if eos in row else [t for t in row if t != 0]

    greedy = greedy_search(model, src, options=DecodeOptions(max_len_b=10, max_len_a=1.5))
    assert decode(model, src, options=DecodeOptions(beam=1)) == [cut(r) for r in greedy.tolist()]
    best = [h[0].tokens for h in beam_search(model, src, options=DecodeOptions(beam=3, alpha=0.6))]
    assert decode(model, src, options=DecodeOptions(beam=3)) == [cut(r) for r in best]
