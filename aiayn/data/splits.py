"""Named splits of the data sets, read as text: the one place a split name (`val`, `test2016`,
`valid`) becomes sentence pairs or a text, for training, `aiayn evaluate` and the benchmarks.

    multi30k          train, val, test2016   (source, target) pairs, downloaded if missing
    tatoeba           train, val, test       (source, target) pairs, split by aiayn.data.tatoeba
    parallel          train, valid           the run's own line-aligned files
    tinyshakespeare   train, val             the first 90% of the characters, and the rest
    wikitext2         train, valid, test     WikiText-2's word-level files (text)
    binarized         train, valid           `aiayn data binarize` shards in data_dir, decoded
    text              train, valid           the run's own text files
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiayn.data.binarized import decoded_pairs
from aiayn.data.corpus import (
    OnBadInput,
    multi30k_files,
    read_parallel,
    read_text,
    split_text,
    tinyshakespeare_text,
    wikitext2_text,
)
from aiayn.data.tatoeba import tatoeba_pairs

SPLITS = {
    "multi30k": ("train", "val", "test2016"),
    "tatoeba": ("train", "val", "test"),
    "parallel": ("train", "valid"),
    "tinyshakespeare": ("train", "val"),
    "wikitext2": ("train", "valid", "test"),
    "binarized": ("train", "valid"),
    "text": ("train", "valid"),
}
"""Data set -> the split names it has; the second is what training validates on."""
TEST_SPLIT = {
    "multi30k": "test2016",
    "tatoeba": "test",
    "parallel": "valid",
    "tinyshakespeare": "val",
    "wikitext2": "test",
    "binarized": "valid",
    "text": "valid",
}
"""What `aiayn evaluate` scores when no split is named."""


def read_split(
    dataset: str,
    split: str,
    *,
    src: str = "de",
    tgt: str = "en",
    data_dir: str | Path | None = None,
    train_files: Sequence[str | Path] = (),
    valid_files: Sequence[str | Path] = (),
    on_bad_input: OnBadInput = "error",
) -> list[tuple[str, str]] | str:
    """Sentence pairs (translation data sets) or a whole text (language modelling) of a split.

    Raises:
        ValueError: An unknown data set or split, naming the splits there are; invalid UTF-8
            in the run's own files (unless `on_bad_input="replace"`).
    """
    if dataset not in SPLITS:
        raise ValueError(f"unknown data set {dataset!r}; choose from {', '.join(SPLITS)}")
    if split not in SPLITS[dataset]:
        names = ", ".join(SPLITS[dataset])
        raise ValueError(f"data set {dataset!r} has splits {names}; got {split!r}")
    if dataset == "multi30k":
        return read_parallel(
            multi30k_files(split, src, data_dir), multi30k_files(split, tgt, data_dir)
        )
    if dataset == "tatoeba":
        return tatoeba_pairs(split, src, tgt, data_dir)
    if dataset == "tinyshakespeare":
        return split_text(tinyshakespeare_text(data_dir), split)
    if dataset == "wikitext2":
        return wikitext2_text(split, data_dir)
    if dataset == "binarized":
        if data_dir is None:
            raise ValueError("dataset binarized reads the folder in data.data_dir; none given")
        return decoded_pairs(data_dir, split)
    files = train_files if split == "train" else valid_files
    if not files:
        field = "data.train_files" if split == "train" else "data.valid_files"
        raise ValueError(
            f"{field} is empty: this run names no {dataset!r} files for its {split} split (an "
            f"imported model has none; give {field}, or files to evaluate)"
        )
    if dataset == "parallel":
        return read_parallel(*files, on_bad_input=on_bad_input)
    return read_text(files[0], on_bad_input=on_bad_input)
