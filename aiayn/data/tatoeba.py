"""Tatoeba sentence pairs (manythings.org/anki, the files the TensorFlow NMT tutorials train on)
and a deterministic train / val / test split of them in which no sentence is shared.

The files are `<root>/tatoeba/<xxx>-eng/<xxx>.txt[.gz]`, one pair per line: the English sentence,
a tab, its translation (newer releases add a third column, attribution, which is ignored). They
have no official split, and the same English sentence often comes with several translations (and
the same translation with several English sentences). Cutting the lines at random would put
"I'm tired." in train and test with two Spanish wordings, so a test score would partly measure
memory. Here pairs that share a sentence (either side, compared after case folding and
collapsing white space) are joined into one group, and each group goes to one split by a hash of
its text: no sentence of val or test occurs in train, the split does not depend on the order of
the file's lines, and a pair added to the file moves no other group.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiayn.data.corpus import data_root, read_lines

TATOEBA_LANGS = {"es": "spa", "de": "deu"}
"""ISO 639-1 code -> the three-letter code of its manythings.org file (all are paired with
English, `en`)."""
TATOEBA_SPLITS = ("train", "val", "test")
HELD_OUT = {"val": 0.02, "test": 0.02}
"""The share of groups (by hash) in each held-out split; train keeps the rest (~96%)."""


def tatoeba_file(lang: str, data_dir: str | Path | None = None) -> Path:
    """`<root>/tatoeba/<xxx>-eng/<xxx>.txt.gz` (or `.txt`) for `lang` (`es`, `de`).

    Raises:
        ValueError: A language without a Tatoeba file here.
        FileNotFoundError: Neither file exists; the message says where to get it.
    """
    if lang not in TATOEBA_LANGS:
        raise ValueError(
            f"no Tatoeba pairs for {lang!r}: choose en and one of {', '.join(TATOEBA_LANGS)}"
        )
    code = TATOEBA_LANGS[lang]
    folder = data_root(data_dir) / "tatoeba" / f"{code}-eng"
    for path in (folder / f"{code}.txt.gz", folder / f"{code}.txt"):
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{folder / f'{code}.txt'}: not found; download {code}-eng.zip from "
        "https://www.manythings.org/anki/ and unzip it there (or set data.data_dir / $AIAYN_DATA)"
    )


def read_tatoeba(path: str | Path) -> list[tuple[str, str]]:
    """(English, other) pairs of a manythings.org file, in file order.

    Raises:
        ValueError: A line without a tab or with an empty side (naming file and line).
    """
    pairs = []
    for number, line in enumerate(read_lines(path), 1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise ValueError(
                f"{path}:{number}: expected 'English<TAB>translation', got {line[:60]!r}"
            )
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def split_of_groups(pairs: list[tuple[str, str]]) -> list[str]:
    """The split (`train`, `val`, `test`) of each pair: pairs sharing a sentence on either side
    form one group (union-find over sentences), and a group's split is decided by the sha256 of
    its smallest sentence key."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = key
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[key] != root:  # path compression
            parent[key], key = root, parent[key]
        return root

    keys = [("en\t" + _key(english), "xx\t" + _key(other)) for english, other in pairs]
    for a, b in keys:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is the group's smallest key
    splits = []
    for a, _ in keys:
        share = int.from_bytes(hashlib.sha256(find(a).encode()).digest()[:8], "big") / 2**64
        if share < HELD_OUT["test"]:
            splits.append("test")
        elif share < HELD_OUT["test"] + HELD_OUT["val"]:
            splits.append("val")
        else:
            splits.append("train")
    return splits


def tatoeba_pairs(
    split: str, src: str, tgt: str, data_dir: str | Path | None = None
) -> list[tuple[str, str]]:
    """(source, target) pairs of one split of the Tatoeba pairs of `src` and `tgt` (one of them
    `en`), in file order.

    Raises:
        ValueError: An unknown split, or a language pair without a file.
        FileNotFoundError: The file is missing.
    """
    if split not in TATOEBA_SPLITS:
        raise ValueError(f"unknown Tatoeba split {split!r}; choose from {TATOEBA_SPLITS}")
    if "en" not in (src, tgt) or src == tgt:
        raise ValueError(f"Tatoeba pairs English with another language; got {src}-{tgt}")
    other = tgt if src == "en" else src
    pairs = read_tatoeba(tatoeba_file(other, data_dir))
    chosen = [p for p, s in zip(pairs, split_of_groups(pairs), strict=True) if s == split]
    return chosen if src == "en" else [(o, e) for e, o in chosen]


def _key(sentence: str) -> str:
    """What counts as the same sentence: case-folded, white space collapsed."""
    return " ".join(sentence.casefold().split())
