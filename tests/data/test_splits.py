"""Split names to text in one place: each data set's splits, the run's own files, the real
Multi30k and Tiny Shakespeare files, and errors that list the splits there are."""

from __future__ import annotations

import pytest

from aiayn.data.splits import SPLITS, TEST_SPLIT, read_split


def test_own_files_by_split_name(tmp_path):
    for name, lines in (("train", ["a b", "c"]), ("valid", ["d"])):
        (tmp_path / f"{name}.de").write_text("\n".join(lines) + "\n")
        (tmp_path / f"{name}.en").write_text("\n".join(x.upper() for x in lines) + "\n")
    files = dict(
        train_files=[tmp_path / "train.de", tmp_path / "train.en"],
        valid_files=[tmp_path / "valid.de", tmp_path / "valid.en"],
    )
    assert read_split("parallel", "train", **files) == [("a b", "A B"), ("c", "C")]
    assert read_split("parallel", TEST_SPLIT["parallel"], **files) == [("d", "D")]
    assert read_split("text", "valid", valid_files=[tmp_path / "valid.de"]) == "d\n"
    with pytest.raises(ValueError, match="'parallel' has splits train, valid; got 'test2016'"):
        read_split("parallel", "test2016", **files)
    with pytest.raises(ValueError, match="unknown data set 'wmt'"):
        read_split("wmt", "train")


def test_real_multi30k_and_shakespeare_splits(data_dir):
    val = read_split("multi30k", "val", src="de", tgt="en", data_dir=data_dir)
    test = read_split("multi30k", TEST_SPLIT["multi30k"], src="de", tgt="en", data_dir=data_dir)
    assert (len(val), len(test)) == (1014, 1000) and all(s and t for s, t in val)
    train = read_split("tinyshakespeare", "train", data_dir=data_dir)
    held_out = read_split("tinyshakespeare", SPLITS["tinyshakespeare"][1], data_dir=data_dir)
    assert train.startswith("First Citizen") and 0.09 < len(held_out) / len(train) < 0.12
