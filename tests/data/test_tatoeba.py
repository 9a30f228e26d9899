"""Tatoeba pairs: the manythings.org format, a split in which no sentence (either side, up to
case and spacing) is shared between train and the held-out sets, independent of line order, and
the real spa-eng and deu-eng files split as docs/results.md states."""

from __future__ import annotations

import gzip
import random

import pytest

from aiayn.data.prepare import prepare_translation
from aiayn.data.splits import read_split
from aiayn.data.tatoeba import _key, read_tatoeba, split_of_groups, tatoeba_file, tatoeba_pairs


def sentences(pairs, splits, wanted) -> set[str]:
    return {_key(s) for pair, split in zip(pairs, splits, strict=True) if split in wanted
            for s in pair}  # fmt: skip


def synthetic_pairs(groups: int = 1000, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs with repeats on both sides, in clusters: an English sentence with several
    translations, a translation of several English sentences, some differing only in case or
    spacing; the clusters share nothing."""
    rng = random.Random(seed)
    pairs = []
    for g in range(groups):
        for _ in range(rng.randint(1, 4)):
            english = f"Sentence {g} {rng.randrange(3)}."
            if rng.random() < 0.2:
                english = english.upper().replace(" ", "  ")
            pairs.append((english, f"Frase {g} {rng.randrange(3)}."))
    rng.shuffle(pairs)
    return pairs


def test_no_sentence_is_shared_between_train_and_the_held_out_splits():
    pairs = synthetic_pairs()
    splits = split_of_groups(pairs)
    train = sentences(pairs, splits, {"train"})
    held_out = sentences(pairs, splits, {"val", "test"})
    assert held_out and not train & held_out
    assert not sentences(pairs, splits, {"val"}) & sentences(pairs, splits, {"test"})


def test_the_split_of_a_pair_does_not_depend_on_the_order_of_the_lines():
    pairs = list(dict.fromkeys(synthetic_pairs()))  # distinct pairs: one split each
    before = dict(zip(pairs, split_of_groups(pairs), strict=True))
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    assert dict(zip(shuffled, split_of_groups(shuffled), strict=True)) == before


def test_groups_join_through_either_side():
    # per chain: a-x, b-x (through x), B-y (through b, case and spacing aside): one group
    chains = [[(f"a{i}", f"x{i}"), (f"b{i}", f"x{i}"), (f" B{i} ", f"y{i}")] for i in range(500)]
    splits = split_of_groups([pair for chain in chains for pair in chain])
    per_chain = [set(splits[3 * i : 3 * i + 3]) for i in range(500)]
    assert all(len(s) == 1 for s in per_chain)
    assert {"val", "test"} <= set().union(*per_chain)  # the test sees held-out chains too


def test_the_file_format_third_column_and_a_bad_line(tmp_path):
    path = tmp_path / "spa.txt.gz"
    path.write_bytes(gzip.compress(b"Go.\tVe.\tCC-BY 2.0 (France) Attribution\nHi.\tHola.\n"))
    assert read_tatoeba(path) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    bad = tmp_path / "bad.txt"
    bad.write_text("Go.\tVe.\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'English<TAB>translation'"):
        read_tatoeba(bad)


def test_pairs_face_the_asked_direction_and_bad_requests_say_why(tmp_path):
    folder = tmp_path / "tatoeba" / "spa-eng"
    folder.mkdir(parents=True)
    pairs = synthetic_pairs(300)
    (folder / "spa.txt").write_text("".join(f"{e}\t{o}\n" for e, o in pairs))
    assert tatoeba_file("es", tmp_path) == folder / "spa.txt"
    es_en = {split: tatoeba_pairs(split, "es", "en", tmp_path) for split in ("train", "test")}
    en_es = tatoeba_pairs("train", "en", "es", tmp_path)
    assert en_es == [(e, o) for o, e in es_en["train"]]
    assert es_en["test"] and all(pair[0].startswith("Frase") for pair in es_en["test"])
    assert read_split("tatoeba", "test", src="es", tgt="en", data_dir=tmp_path) == es_en["test"]
    with pytest.raises(ValueError, match="unknown Tatoeba split 'valid'"):
        tatoeba_pairs("valid", "es", "en", tmp_path)
    with pytest.raises(ValueError, match="English with another language; got es-de"):
        tatoeba_pairs("train", "es", "de", tmp_path)
    with pytest.raises(ValueError, match="no Tatoeba pairs for 'fr'"):
        tatoeba_pairs("train", "fr", "en", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"deu-eng/deu.txt: not found; download deu-eng"):
        tatoeba_pairs("train", "de", "en", tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("lang", "sizes"),
    [("es", (114_205, 2_437, 2_322)), ("de", (162_522, 3_363, 3_312))],
)
def test_the_real_files_split_without_shared_sentences(data_dir, lang, sizes):
    pairs = read_tatoeba(tatoeba_file(lang, data_dir))
    splits = split_of_groups(pairs)
    assert tuple(splits.count(s) for s in ("train", "val", "test")) == sizes
    assert not sentences(pairs, splits, {"train"}) & sentences(pairs, splits, {"val", "test"})


@pytest.mark.integration
def test_prepare_trains_the_joint_tokenizer_on_train_and_reports_every_split(data_dir, tmp_path):
    report = prepare_translation(
        dataset="tatoeba", src="es", tgt="en", out_dir=tmp_path, data_dir=data_dir,
        vocab_size=2000,
    )  # fmt: skip
    assert report.dataset == "tatoeba es-en" and report.vocab_size == 2000
    assert [(s.name, s.size) for s in report.splits] == [
        ("train", 114_205), ("val", 2_437), ("test", 2_322)
    ]  # fmt: skip
    assert (tmp_path / "tokenizer.model").exists()
