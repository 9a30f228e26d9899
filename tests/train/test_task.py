"""The training task's data: the tokenizer made once (trained, copied or kept), pairs encoded
and filtered by length with a note, raw validation pairs kept for BLEU, language-model windows."""

from __future__ import annotations

import pytest

from aiayn.train.distributed import DistributedContext
from aiayn.train.task import load_task_data, read_texts


def test_translation_data_keeps_raw_validation_pairs_and_reports_filtering(make_config, tmp_path):
    config = make_config().data
    data = load_task_data(config, tmp_path, DistributedContext(), max_len=64)
    assert data.notes[0] == f"tokenizer: copied {config.tokenizer}"
    assert (tmp_path / "tokenizer.model").is_file()
    assert any(note.startswith("train: kept 240 of 240 pairs") for note in data.notes)
    _, valid = read_texts(config)
    assert data.valid_pairs == valid and len(data.valid) == len(valid) == 12
    batch = data.train.make_batch([0, 1])
    source, target = read_texts(config)[0][0]
    assert batch.src[0, : batch.src_valid[0].sum() - 1].tolist() == data.tokenizer.encode(source)
    assert (
        data.tokenizer.decode(batch.tgt_out[0, : batch.tgt_valid[0].sum() - 1].tolist()) == target
    )
    # a resumed run keeps the tokenizer it has
    again = load_task_data(config, tmp_path, DistributedContext(), max_len=64)
    assert again.notes[0].endswith("(kept)")


def test_pairs_longer_than_the_positions_are_dropped_with_a_note(make_config, tmp_path):
    config = make_config(data={"max_len": 12}).data  # data.max_len before the model's positions
    data = load_task_data(config, tmp_path, DistributedContext(), max_len=64)
    kept = next(note for note in data.notes if note.startswith("train: kept"))
    assert "too long" in kept and not kept.startswith("train: kept 240 of 240")
    assert max(data.train.lengths) <= 12


def test_a_tokenizer_is_trained_on_both_sides_when_none_is_given(make_config, tmp_path):
    config = make_config(data={"tokenizer": None, "tokenizer_type": "char", "vocab_size": 60}).data
    data = load_task_data(config, tmp_path, DistributedContext(), max_len=64)
    assert data.notes[0].startswith("tokenizer: trained char with")
    assert "480 training sentences" in data.notes[0]  # 240 pairs, source and target


def test_language_model_windows_cover_the_text(make_lm_config, tmp_path):
    config = make_lm_config().data
    data = load_task_data(config, tmp_path, DistributedContext(), max_len=32)
    assert data.valid_pairs == [] and set(data.train.lengths) == {config.seq_len}
    batch = data.train.make_batch([0])
    assert batch.tgt_in.shape == (1, config.seq_len)
    assert batch.tgt_out[0, :-1].tolist() == batch.tgt_in[0, 1:].tolist()  # shifted by one


def test_every_pair_filtered_out_is_an_error(make_config, tmp_path):
    with pytest.raises(ValueError, match="no train pairs left after filtering"):
        load_task_data(
            make_config(data={"max_len": 2}).data, tmp_path, DistributedContext(), max_len=64
        )
