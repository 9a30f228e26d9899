"""Binarized shards (aiayn/data/binarized.py): what is read back is what the tokenizer makes of
each line, across shards and worker processes; the files match their header's checksums, and
bad input, a corrupt shard, an unfinished folder or another format say so."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from aiayn.data.binarized import (
    HEADER_FILE,
    BinarizedPairs,
    binarize_pairs,
    id_dtype,
)
from aiayn.data.tokenizer import Tokenizer, load_tokenizer

LINES = [("ein Hund läuft im Garten", "a dog runs in the garden"), ("", "empty source"),
         ("Katze", "cat"), ("der Mann sitzt", "the man sits")] * 6  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("binarize")
    (folder / "train.de.gz").write_bytes(
        gzip.compress("".join(s + "\n" for s, _ in LINES).encode())
    )
    (folder / "train.en").write_text("".join(t + "\n" for _, t in LINES))
    Tokenizer.train([x for pair in LINES for x in pair], vocab_size=60, model_type="char",
                    path=folder / "tok" / "tokenizer.model")  # fmt: skip
    return folder


def test_pairs_read_back_as_the_tokenizer_encodes_them_across_shards(corpus, tmp_path):
    out = tmp_path / "bin"
    shards = binarize_pairs(corpus / "train.de.gz", corpus / "train.en", corpus / "tok", out,
                            shard_pairs=5, workers=2, progress=False)  # fmt: skip
    assert [s.pairs for s in shards] == [5, 5, 5, 5, 4] and shards[0].name == "train-00000"
    tokenizer = load_tokenizer(out)  # the tokenizer travels with the shards
    data = BinarizedPairs(out, verify=True)
    assert len(data) == len(LINES) and data.dtype == np.dtype("<u2")
    for i, (s, t) in enumerate(LINES):
        src, tgt = data[i]
        assert src.tolist() == tokenizer.encode(s) and tgt.tolist() == tokenizer.encode(t)
    lengths = data.lengths()
    assert lengths.tolist() == [[len(tokenizer.encode(s)), len(tokenizer.encode(t))]
                                for s, t in LINES]  # fmt: skip
    with pytest.raises(IndexError):
        data[len(LINES)]


def test_a_second_split_joins_the_folder_and_the_same_split_is_refused(corpus, tmp_path):
    out = tmp_path / "bin"
    args = (corpus / "train.de.gz", corpus / "train.en", corpus / "tok", out)
    binarize_pairs(*args, workers=1, progress=False)
    binarize_pairs(*args, split="valid", workers=1, progress=False)
    header = json.loads((out / HEADER_FILE).read_text())
    assert sorted(header["splits"]) == ["train", "valid"] and header["version"] == 1
    assert len(BinarizedPairs(out, "valid")) == len(LINES)
    with pytest.raises(ValueError, match="holds split 'train' already"):
        binarize_pairs(*args, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"no split 'test'; it has \['train', 'valid'\]"):
        BinarizedPairs(out, "test")


def test_a_corrupt_shard_an_unfinished_folder_and_another_version_are_named(corpus, tmp_path):
    out = tmp_path / "bin"
    binarize_pairs(corpus / "train.de.gz", corpus / "train.en", corpus / "tok", out,
                   shard_pairs=10, workers=1, progress=False)  # fmt: skip
    shard = out / "train-00001.bin"
    data = bytearray(shard.read_bytes())
    data[3] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-00001.bin: sha256 does not match"):
        BinarizedPairs(out, verify=True)
    header = json.loads((out / HEADER_FILE).read_text())
    (out / HEADER_FILE).write_text(json.dumps({**header, "version": 2}))
    with pytest.raises(ValueError, match="version 2; this aiayn reads 'aiayn-binarized' version 1"):
        BinarizedPairs(out)
    (out / HEADER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        BinarizedPairs(out)


def test_unequal_files_and_bad_utf8_name_the_file_and_line(corpus, tmp_path):
    (tmp_path / "short.en").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match=r"short.en has 2 lines, .*train.de.gz more"):
        binarize_pairs(corpus / "train.de.gz", tmp_path / "short.en", corpus / "tok",
                       tmp_path / "a", workers=1, progress=False)  # fmt: skip
    (tmp_path / "bad.de").write_bytes(b"gut\nschl\xe9cht\n")
    (tmp_path / "ok.en").write_text("good\nbad\n")
    with pytest.raises(ValueError, match=r"bad.de:2: invalid UTF-8"):
        binarize_pairs(tmp_path / "bad.de", tmp_path / "ok.en", corpus / "tok", tmp_path / "b",
                       workers=1, progress=False)  # fmt: skip


def test_ids_take_two_bytes_up_to_65536_pieces():
    assert id_dtype(65_536) == np.dtype("<u2") and id_dtype(65_537) == np.dtype("<u4")


def test_the_command_binarizes_and_says_how_much(corpus, tmp_path, capsys):
    from aiayn.cli import main

    main(["data", "binarize", "--source", str(corpus / "train.de.gz"), "--target",
          str(corpus / "train.en"), "--tokenizer", str(corpus / "tok"), "-o",
          str(tmp_path / "bin"), "--shard-pairs", "10", "--workers", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert f"split train, {len(LINES)} pairs" in out and "in 3 shards" in out
    assert len(BinarizedPairs(tmp_path / "bin", verify=True)) == len(LINES)
