"""Pair filtering: empty lines, over-long pairs and bad length ratios are dropped and counted
(or truncated, or refused naming file and line), on ids and on files the tests write.
"""

from __future__ import annotations

import pytest

from aiayn.data.corpus import read_parallel
from aiayn.data.filtering import FilterReport, filter_pairs
from aiayn.data.tokenizer import Tokenizer

GOOD = ([5, 6, 7], [8, 9])
EMPTY = ([5, 6], [])
LONG = (list(range(4, 14)), list(range(4, 12)))  # 10 and 8 tokens
SKEWED = ([5], [6] * 5)


def test_each_rule_drops_and_counts():
    pairs = [GOOD, EMPTY, LONG, SKEWED, GOOD]
    kept, report = filter_pairs(pairs, max_len=8, max_ratio=3.0, name="train")
    assert kept == [GOOD, GOOD]
    assert (report.total, report.empty, report.too_long, report.bad_ratio) == (5, 1, 1, 1)
    assert report.kept == 2 and report.truncated == 0
    line = str(report)
    assert "\n" not in line
    assert line == (
        "train: kept 2 of 5 pairs; dropped 1 empty, 1 too long, 1 bad length ratio; truncated 0"
    )


def test_max_len_counts_the_eos_or_bos_the_batcher_adds():
    pair = ([4] * 7, [5] * 7)
    assert filter_pairs([pair], max_len=8)[1].kept == 1  # 7 + EOS fits 8 positions
    assert filter_pairs([pair], max_len=7)[1].too_long == 1


def test_truncate_cuts_long_pairs_and_still_skips_the_rest():
    kept, report = filter_pairs([LONG, EMPTY, GOOD], max_len=8, policy="truncate")
    assert kept == [(LONG[0][:7], LONG[1][:7]), GOOD]
    assert (report.truncated, report.too_long, report.empty, report.kept) == (1, 0, 1, 2)


@pytest.mark.parametrize(
    ("pair", "message"),
    [(EMPTY, "empty sentence"), (LONG, "pair too long"), (SKEWED, "length ratio above 3.0")],
)
def test_error_policy_names_files_and_line(pair, message):
    with pytest.raises(ValueError, match=f"train.de:2 / train.en:2: {message}"):
        filter_pairs(
            [GOOD, pair], max_len=8, max_ratio=3.0, policy="error", files=("train.de", "train.en")
        )
    with pytest.raises(ValueError, match="pair 1: "):
        filter_pairs([pair], max_len=8, max_ratio=3.0, policy="error")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown filter policy 'drop'"):
        filter_pairs([GOOD], max_len=8, policy="drop")
    with pytest.raises(ValueError, match="max_ratio >= 1"):
        filter_pairs([GOOD], max_len=8, max_ratio=0.5)


def test_on_files_the_tests_write(tmp_path):
    src_lines = ["ein Hund", "", "zwei Katzen " * 20, "ja", "ein Haus"]
    tgt_lines = ["a dog", "nothing", "two cats " * 20, "yes it is so very true indeed", "a house"]
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("".join(line + "\n" for line in src_lines))
    tgt.write_text("".join(line + "\n" for line in tgt_lines))
    pairs = read_parallel(src, tgt)
    tokenizer = Tokenizer.train(src_lines + tgt_lines, vocab_size=100, model_type="char")
    ids = [(tokenizer.encode(s), tokenizer.encode(t)) for s, t in pairs]
    kept, report = filter_pairs(ids, max_len=64, max_ratio=5.0, name="train", files=(src, tgt))
    assert report == FilterReport("train", total=5, empty=1, too_long=1, bad_ratio=1)
    assert [tokenizer.decode(s) for s, _ in kept] == ["ein Hund", "ein Haus"]
    with pytest.raises(ValueError, match=f"{src}:2 / {tgt}:2: empty sentence"):
        filter_pairs(ids, max_len=64, policy="error", files=(src, tgt))
