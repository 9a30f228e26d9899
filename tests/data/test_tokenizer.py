"""The tokenizer: exact round trips over every Multi30k val and test sentence, special ids that
agree with the model, save/load, and the Tiny Shakespeare character model.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiayn.data.corpus import (
    MULTI30K_LANGS,
    multi30k_files,
    read_lines,
    split_text,
    tinyshakespeare_text,
)
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKENIZER_FILE, UNK_ID, Tokenizer
from aiayn.model.config import ModelConfig


@pytest.fixture(scope="module")
def joint(data_dir) -> Tokenizer:
    """The default tokenizer: joint BPE, 8000 pieces, on all of Multi30k train de + en."""
    files = [multi30k_files("train", lang, data_dir, download=False) for lang in ("de", "en")]
    return Tokenizer.train(files, vocab_size=8000)


def test_special_ids_agree_with_the_model(joint):
    config = ModelConfig()
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (
        config.pad_id,
        config.unk_id,
        config.bos_id,
        config.eos_id,
    )
    assert (joint.pad_id, joint.unk_id, joint.bos_id, joint.eos_id) == (
        PAD_ID,
        UNK_ID,
        BOS_ID,
        EOS_ID,
    )
    assert joint.vocab_size == 8000
    assert [joint.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]


@pytest.mark.parametrize("split", ["val", "test2016"])
@pytest.mark.parametrize("lang", MULTI30K_LANGS)
def test_every_multi30k_sentence_round_trips(joint, data_dir, split, lang):
    lines = read_lines(multi30k_files(split, lang, data_dir, download=False))
    ids = joint.encode_batch(lines)
    assert all(UNK_ID not in row and BOS_ID not in row and EOS_ID not in row for row in ids)
    mismatches = [
        (line, joint.decode(row))
        for line, row in zip(lines, ids, strict=True)
        if joint.decode(row) != line
    ]
    assert not mismatches, f"{len(mismatches)} of {len(lines)} differ, e.g. {mismatches[0]}"


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_round_trips_through_byte_fallback(joint, text):
    assert joint.decode(joint.encode(text)) == text


def test_encode_decode_pieces(joint):
    text = "Zwei Männer stehen am Ufer."
    ids = joint.encode(text)
    assert joint.encode_batch([text, ""]) == [ids, []]
    assert "".join(joint.pieces(text)).replace("\u2581", " ").lstrip() == text
    assert [joint.id_to_piece(i) for i in ids] == joint.pieces(text)
    assert joint.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == text


def test_save_and_load_by_path(joint, tmp_path):
    path = joint.save(tmp_path / "run" / TOKENIZER_FILE)
    loaded = Tokenizer.load(path)
    text = "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."
    assert loaded.encode(text) == joint.encode(text) and loaded.vocab_size == joint.vocab_size
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        Tokenizer.load(tmp_path / "missing.model")


def test_unigram_trains_and_round_trips(data_dir, tmp_path):
    lines = read_lines(multi30k_files("val", "en", data_dir, download=False))
    tokenizer = Tokenizer.train(
        lines, vocab_size=1000, model_type="unigram", path=tmp_path / TOKENIZER_FILE
    )
    assert (tmp_path / TOKENIZER_FILE).is_file() and tokenizer.vocab_size == 1000
    assert all(tokenizer.decode(tokenizer.encode(line)) == line for line in lines)


def test_character_model_for_tiny_shakespeare(data_dir):
    text = tinyshakespeare_text(data_dir, download=False)
    train, val = split_text(text, "train"), split_text(text, "val")
    tokenizer = Tokenizer.train(train.split("\n"), vocab_size=256, model_type="char")
    assert tokenizer.vocab_size == 4 + 65  # specials + every character, newline included
    ids = tokenizer.encode(val)
    assert len(ids) == len(val) and UNK_ID not in ids
    assert tokenizer.decode(ids) == val


def test_training_errors_are_clear():
    with pytest.raises(ValueError, match="Vocabulary size too high"):
        Tokenizer.train(["ein Hund", "zwei Katzen"], vocab_size=5000)
    with pytest.raises(TypeError, match="one string"):
        Tokenizer.train("ein Hund", vocab_size=300)
