"""`aiayn data prepare` / `data show` as library calls: find or fetch a named data set, train its
tokenizer, encode and filter the splits, and report sizes, length percentiles and filter counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from aiayn.data.corpus import (
    MULTI30K_SPLITS,
    iter_lines,
    multi30k_files,
    read_parallel,
    split_text,
    tinyshakespeare_text,
)
from aiayn.data.filtering import DEFAULT_MAX_RATIO, FilterReport, Pair, Policy, filter_pairs
from aiayn.data.tatoeba import TATOEBA_SPLITS, tatoeba_pairs
from aiayn.data.tokenizer import TOKENIZER_FILE, ModelType, TextTokenizer, Tokenizer
from aiayn.data.wordlevel import WordTokenizer

DATASETS = ("multi30k", "tatoeba", "tinyshakespeare")
DEFAULT_VOCAB_SIZE = 8000
"""Joint BPE vocabulary for Multi30k. Its 29k training pairs hold ~25k German and ~15k English
whitespace-separated types (~330k tokens a side). 8k joint pieces keep frequent words whole and
split the long tail (German compounds) into a few pieces, while each piece still occurs often
enough to learn its embedding; the paper's 37k (WMT, 4.5M pairs) would leave most pieces seen
only a handful of times here."""
DEFAULT_MAX_LEN = 256
"""Default `filter_pairs` limit; Multi30k's longest sentences are far shorter, none is cut."""
PERCENTILES = (50, 90, 99, 100)


@dataclass
class SplitStats:
    """Size of one split, its token-length percentiles and what the filters dropped."""

    name: str
    size: int
    """Sentence pairs (translation) or characters (language modelling)."""
    unit: str
    tokens: int
    """Tokens over the split (both sides for translation), specials excluded."""
    src_lengths: dict[int, int] = field(default_factory=dict)
    """Percentile -> source tokens per sentence (100 is the maximum); empty for a stream."""
    tgt_lengths: dict[int, int] = field(default_factory=dict)
    filtered: FilterReport | None = None

    def __str__(self) -> str:
        text = f"{self.name}: {self.size} {self.unit}, {self.tokens} tokens"
        for side, lengths in (("source", self.src_lengths), ("target", self.tgt_lengths)):
            if lengths:
                text += f"; {side} " + " ".join(f"p{p} {n}" for p, n in lengths.items())
        if self.filtered is not None:
            text += f"\n  {self.filtered}"
        return text


@dataclass
class PrepareReport:
    """What `prepare_translation` / `prepare_language_model` made; `str()` is for people."""

    dataset: str
    tokenizer_path: Path
    vocab_size: int
    model_type: str
    train_seconds: float
    """Wall time of tokenizer training alone."""
    splits: list[SplitStats]

    def __str__(self) -> str:
        head = (
            f"{self.dataset}: {self.model_type} tokenizer, {self.vocab_size} pieces, trained in "
            f"{self.train_seconds:.1f} s -> {self.tokenizer_path}"
        )
        return "\n".join([head, *map(str, self.splits)])


def default_out_dir(dataset: str, src: str = "de", tgt: str = "en") -> Path:
    """`data/<dataset>-<src>-<tgt>` (translation) or `data/<dataset>`: where `prepare` writes by
    default."""
    paired = dataset in ("multi30k", "tatoeba")
    return Path("data") / (f"{dataset}-{src}-{tgt}" if paired else dataset)


def prepare_translation(
    *,
    dataset: str = "multi30k",
    src: str = "de",
    tgt: str = "en",
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    model_type: ModelType = "bpe",
    max_len: int = DEFAULT_MAX_LEN,
    max_ratio: float = DEFAULT_MAX_RATIO,
    policy: Policy = "skip",
    download: bool | None = None,
) -> PrepareReport:
    """Train the joint tokenizer of a translation data set (`multi30k`, `tatoeba`) on its train
    split (source + target) and report every split.

    Writes `<out_dir>/tokenizer.model`. Multi30k's files are found in (or fetched into) the data
    root; Tatoeba's are found there (`aiayn.data.tatoeba`).
    """
    if src == tgt:
        raise ValueError(f"source and target language are both {src!r}")
    if dataset == "multi30k":
        files = {s: _split_files(s, src, tgt, data_dir, download) for s in MULTI30K_SPLITS}
        # Reading every split first: unequal line counts or bad UTF-8 stop us before training.
        texts = {split: read_parallel(*paths) for split, paths in files.items()}
    elif dataset == "tatoeba":
        files = dict.fromkeys(TATOEBA_SPLITS)  # one file for all splits: errors name the pair
        texts = {split: tatoeba_pairs(split, src, tgt, data_dir) for split in TATOEBA_SPLITS}
    else:
        raise ValueError(f"{dataset!r} is not a translation data set; choose multi30k or tatoeba")
    path = Path(out_dir) / TOKENIZER_FILE
    start = time.perf_counter()
    train_sentences = [s for s, _ in texts["train"]] + [t for _, t in texts["train"]]
    tokenizer = Tokenizer.train(
        train_sentences, vocab_size=vocab_size, model_type=model_type, path=path
    )
    seconds = time.perf_counter() - start
    splits = []
    for split, pairs in texts.items():
        pairs_ids = _encode_pairs(tokenizer, pairs)
        _, report = filter_pairs(
            pairs_ids,
            max_len=max_len,
            max_ratio=max_ratio,
            policy=policy,
            name=split,
            files=files[split],
        )
        splits.append(_split_stats(split, pairs_ids, report))
    return PrepareReport(
        f"{dataset} {src}-{tgt}", path, tokenizer.vocab_size, model_type, seconds, splits
    )


def prepare_language_model(
    *, out_dir: str | Path, data_dir: str | Path | None = None, download: bool | None = None
) -> PrepareReport:
    """Train the Tiny Shakespeare character tokenizer on its train split (first 90%).

    Writes `<out_dir>/tokenizer.model`; the report gives characters and tokens per split.
    """
    text = tinyshakespeare_text(data_dir, download=download)
    start = time.perf_counter()
    tokenizer = Tokenizer.train(
        split_text(text, "train").split("\n"),
        vocab_size=256,
        model_type="char",
        path=Path(out_dir) / TOKENIZER_FILE,
    )
    seconds = time.perf_counter() - start
    splits = []
    for split in ("train", "val"):
        part = split_text(text, split)
        splits.append(SplitStats(split, len(part), "characters", len(tokenizer.encode(part))))
    path = Path(out_dir) / TOKENIZER_FILE
    return PrepareReport("tinyshakespeare", path, tokenizer.vocab_size, "char", seconds, splits)


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    model_type: str,
    vocab_size: int,
    max_sentences: int | None = None,
) -> tuple[TextTokenizer, Path]:
    """The one place a vocabulary is learnt from sentences and saved into `out_dir`: `word`
    (`aiayn.data.wordlevel`, every word up to `vocab_size`) or a SentencePiece `bpe`, `unigram`
    or `char` model. Returns the tokenizer and the file written."""
    if model_type == "word":
        words = WordTokenizer.train(texts, vocab_size=vocab_size)
        return words, words.save_to(out_dir)
    path = Path(out_dir) / TOKENIZER_FILE
    tokenizer = Tokenizer.train(texts, vocab_size=vocab_size, model_type=model_type, path=path,
                                max_sentences=max_sentences)  # fmt: skip
    return tokenizer, path


def train_tokenizer_on_files(
    files: Sequence[Path],
    out_dir: str | Path,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    model_type: str = "bpe",
    max_sentences: int | None = None,
) -> str:
    """Learn one vocabulary from text files (both languages: §3.4's shared vocabulary), read
    line by line; `word` keeps every word up to `vocab_size`. Returns a line saying what was
    written where.

    Raises:
        FileNotFoundError: A file is missing (named).
    """
    for file in files:
        if not Path(file).is_file():
            raise FileNotFoundError(f"{file}: no such file")
    start = time.perf_counter()
    lines = chain.from_iterable(iter_lines(f) for f in files)
    tokenizer, path = train_tokenizer(
        lines, out_dir, model_type=model_type, vocab_size=vocab_size, max_sentences=max_sentences
    )
    sample = f" (a sample of {max_sentences:,} lines)" if max_sentences else ""
    return (f"{model_type} tokenizer, {tokenizer.vocab_size} pieces, from {len(files)} files"
            f"{sample} in {time.perf_counter() - start:.1f} s -> {path}")  # fmt: skip


def show_examples(
    dataset: str,
    *,
    out_dir: str | Path,
    src: str = "de",
    tgt: str = "en",
    split: str = "val",
    n: int = 3,
    data_dir: str | Path | None = None,
) -> str:
    """The first `n` sentences of a split with their pieces and ids, under the saved tokenizer."""
    tokenizer = Tokenizer.load(Path(out_dir) / TOKENIZER_FILE)
    if dataset == "multi30k":
        paths = [multi30k_files(split, lang, data_dir) for lang in (src, tgt)]
        texts = [text for pair in read_parallel(*paths)[:n] for text in pair]
    elif dataset == "tatoeba":
        texts = [text for pair in tatoeba_pairs(split, src, tgt, data_dir)[:n] for text in pair]
    elif dataset == "tinyshakespeare":
        lines = split_text(tinyshakespeare_text(data_dir), split).split("\n")
        texts = [line for line in lines if line.strip()][:n]
    else:
        raise ValueError(f"unknown data set {dataset!r}; choose from {DATASETS}")
    return "\n".join(_show(tokenizer, text) for text in texts)


def _show(tokenizer: Tokenizer, text: str) -> str:
    pieces = " ".join(piece.replace("\n", "\\n") for piece in tokenizer.pieces(text))
    return f"text:   {text}\npieces: {pieces}\nids:    {tokenizer.encode(text)}\n"


def _split_files(
    split: str, src: str, tgt: str, data_dir: str | Path | None, download: bool | None
) -> tuple[Path, Path]:
    return (
        multi30k_files(split, src, data_dir, download=download),
        multi30k_files(split, tgt, data_dir, download=download),
    )


def _encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]]) -> list[Pair]:
    src_ids = tokenizer.encode_batch([s for s, _ in pairs])
    tgt_ids = tokenizer.encode_batch([t for _, t in pairs], target=True)
    return list(zip(src_ids, tgt_ids, strict=True))


def _split_stats(name: str, pairs_ids: Sequence[Pair], report: FilterReport) -> SplitStats:
    src_lengths = [len(s) for s, _ in pairs_ids]
    tgt_lengths = [len(t) for _, t in pairs_ids]
    tokens = sum(src_lengths) + sum(tgt_lengths)
    stats = SplitStats(name, len(pairs_ids), "pairs", tokens, filtered=report)
    if pairs_ids:
        stats.src_lengths, stats.tgt_lengths = _percentiles(src_lengths), _percentiles(tgt_lengths)
    return stats


def _percentiles(lengths: Sequence[int]) -> dict[int, int]:
    values = np.percentile(np.asarray(lengths), PERCENTILES)
    return {p: int(np.ceil(v)) for p, v in zip(PERCENTILES, values, strict=True)}
