"""The Python API on real (tiny) run directories made by `train`: one output line per input,
in input order and independent of batching, empty lines, long inputs, generation, attention
maps and evaluation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import aiayn
from tests.tiny_runs import tiny_run


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("mt"), translation=True)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("lm"), translation=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def translator(translation_run):
    return aiayn.load(translation_run)


SOURCES = ["der hund läuft", "", "katze", "rot blau haus im garten", "   ", "der hund läuft"]


@pytest.mark.parametrize("beam", [1, 4])
def test_one_output_per_input_in_order_whatever_the_batching(translator, beam):
    outputs = translator.translate(SOURCES, beam=beam)
    assert len(outputs) == len(SOURCES)
    assert outputs[1] == "" and outputs[4] == ""  # empty and blank lines stay empty
    assert outputs[0] == outputs[5]
    one_by_one = [translator.translate([s], beam=beam)[0] for s in SOURCES]
    tiny_batches = translator.translate(SOURCES, beam=beam, max_tokens=1)
    assert outputs == one_by_one == tiny_batches
    assert all("\n" not in out for out in outputs)


def test_a_compiled_decoder_step_translates_as_the_eager_one(translation_run, translator):
    model = aiayn.load(translation_run).compile(autotune=False)
    assert model.summary().endswith(", decoder step compiled")
    for beam in (1, 4):
        assert model.translate(SOURCES, beam=beam) == translator.translate(SOURCES, beam=beam)
    assert model.with_decode(beam=2).compiled is model.compiled
    with pytest.raises(ValueError, match="needs fp32 or bf16 weights, not int8"):
        aiayn.load(translation_run, precision="int8").compile()


def test_no_input_gives_no_output_and_a_string_is_refused(translator):
    assert translator.translate([]) == []
    with pytest.raises(TypeError, match="list"):
        translator.translate("der hund")
    with pytest.raises(ValueError, match="cannot generate"):
        translator.generate("der hund")


def test_long_inputs_are_truncated_with_a_warning_or_refused(translator):
    long = " ".join(["katze"] * 20)  # 100+ characters, 40 positions
    with pytest.warns(UserWarning, match="input 2 has .* tokens, more than the model's 40"):
        out = translator.translate(["hund", long])
    assert len(out) == 2
    with pytest.raises(ValueError, match="long_input='truncate'"):
        translator.translate([long], long_input="error")
    strict = translator.with_decode(long_input="error")
    with pytest.raises(ValueError, match="input 1 has"):
        strict.translate([long])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translator.translate(["hund"])  # nothing to warn about


def test_checkpoints_can_be_chosen(translation_run):
    last = aiayn.load(translation_run, "last")
    assert last.translate(["hund"]) == aiayn.load(translation_run).translate(["hund"])
    with pytest.raises(FileNotFoundError, match="averaged"):
        aiayn.load(translation_run, "averaged")


def test_attention_maps_of_a_translation(translator, tmp_path):
    maps = translator.attention("der hund", target="the dog")
    n_src, n_out = len("der hund") + 2, len("the dog") + 2  # char pieces, ▁, EOS
    assert len(maps.source_pieces) == maps.cross.shape[-1] == maps.encoder_self.shape[-1]
    assert maps.source_pieces[-1] == "</s>" and maps.input_pieces[0] == "<s>"
    assert maps.cross.shape == (2, 2, len(maps.output_pieces), len(maps.source_pieces))
    assert abs(len(maps.source_pieces) - n_src) <= 1 and abs(len(maps.output_pieces) - n_out) <= 1
    translated = translator.attention("der hund")
    assert translated.output_pieces[-1] == "</s>"


def test_attention_of_a_target_longer_than_the_positions_keeps_its_first_ones(translator):
    # a translation cut at the output limit may re-encode to more pieces than the decoder has
    with pytest.warns(UserWarning, match="target has 60 tokens"):
        maps = translator.attention("der hund", target="e" * 60)
    assert len(maps.input_pieces) == 40 == translator.config.model.max_len
    assert maps.output_pieces == ["e"] * 39 + ["</s>"]


def test_evaluate_scores_files_with_signatures_and_keeps_hypotheses(translator, tmp_path):
    folder = Path(translator.config.data.valid_files[0]).parent
    out = tmp_path / "hyps.txt"
    result = translator.evaluate(files=[folder / "valid.de", folder / "valid.en"], output=out)
    assert result.sentences == 8 and len(out.read_text().splitlines()) == 8
    assert "case:mixed" in result.bleu.signature and "chrF2" == result.chrf.name
    assert "case:lc" in result.bleu_lowercase_13a.signature
    assert "tok:13a" in result.bleu_lowercase_13a.signature
    assert "lowercased, 13a-tokenised" in str(result)
    assert out.read_text().splitlines() == result.hypotheses


def test_language_model_generates_evaluates_and_refuses_to_translate(lm_run):
    lm = aiayn.load(lm_run)
    text = lm.generate("der hund", max_new_tokens=10, seed=0)
    assert text == lm.generate("der hund", max_new_tokens=10, seed=0)
    assert isinstance(text, str) and len(text) <= 10 * 4  # at most 10 pieces
    assert lm.generate("der", max_new_tokens=5, temperature=0.0) == lm.generate(
        "der", max_new_tokens=5, temperature=0.0, seed=123
    )
    with pytest.warns(UserWarning, match="prompt has"):
        lm.generate("katze " * 20, max_new_tokens=3)
    result = lm.evaluate("valid", context=16, stride=8)
    assert result.perplexity.n_tokens > 100 and "stride 8" in str(result)
    assert str(lm.evaluate(context=16)).startswith("valid: ")  # the split scored is named
    assert lm.attention("der hund").decoder_self.shape[:2] == (2, 2)
    with pytest.raises(ValueError, match="need some text"):
        lm.attention("")
    with pytest.raises(ValueError, match="cannot translate"):
        lm.translate(["der hund"])


def test_a_prompt_may_fill_every_position_and_only_a_longer_one_is_cut(lm_run):
    lm = aiayn.load(lm_run)
    max_len = lm.config.model.max_len
    pieces = lm.tokenizer.encode("hund " * 40)
    fits = lm.tokenizer.decode(pieces[:max_len])
    assert len(lm.tokenizer.encode(fits)) == max_len
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm.generate(fits, max_new_tokens=2, temperature=0.0)
    too_long = lm.tokenizer.decode(pieces[: max_len + 1])
    with pytest.warns(UserWarning, match=f"kept its last {max_len}"):
        lm.generate(too_long, max_new_tokens=2, temperature=0.0)
