"""The data of a training run: the shared vocabulary (trained into the run directory unless one is
given), the encoded and filtered splits, and how a list of example indices becomes a `Batch` --
sentence pairs for translation, fixed-length windows of a token stream for language modelling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aiayn.config import DataConfig
from aiayn.data.batching import Batch, collate, example_lengths, lm_batch, window_starts
from aiayn.data.binarized import BinarizedPairs
from aiayn.data.filtering import filter_lengths, filter_pairs
from aiayn.data.prepare import train_tokenizer
from aiayn.data.splits import SPLITS, read_split
from aiayn.data.tokenizer import TOKENIZER_FILE, TextTokenizer, Tokenizer, load_tokenizer
from aiayn.train.distributed import DistributedContext, barrier


@dataclass
class Split:
    """One split as the batch sampler sees it: a length per example and a batch maker."""

    lengths: Sequence[int]
    """Padded length of each example (what `TokenBatchSampler` budgets); a numpy array for
    binarized data."""
    make_batch: Callable[[Sequence[int]], Batch]
    """Example indices -> `Batch`."""

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class TaskData:
    """Everything the training loop reads: tokenizer, splits, and raw validation text."""

    tokenizer: TextTokenizer
    train: Split
    valid: Split
    valid_pairs: list[tuple[str, str]] = field(default_factory=list)
    """Translation: the validation (source, reference) sentences, unfiltered, for BLEU."""
    notes: list[str] = field(default_factory=list)
    """What happened on the way (tokenizer trained, pairs filtered), for the log."""


def load_task_data(
    config: DataConfig,
    run_dir: Path,
    ctx: DistributedContext,
    *,
    max_len: int,
    init_from: str | Path | None = None,
) -> TaskData:
    """Read, tokenise and filter the data `config` names; rank 0 makes the tokenizer first.

    Pairs longer than `config.max_len` (default `max_len`, the model's positions) are dropped.

    The tokenizer is the run directory's if it has one (a resumed run), else the tokenizer of
    the run `init_from` names (fine-tuning), else a copy of `config.tokenizer`, else trained on
    the training split (source and target together).
    """
    if config.dataset == "binarized":
        return _binarized_data(config, run_dir, ctx, config.max_len or max_len, init_from)
    notes: list[str] = []
    if ctx.is_main:
        texts = read_texts(config)
        notes.append(prepare_tokenizer(config, run_dir, texts[0], init_from=init_from))
    barrier(ctx)
    if not ctx.is_main:
        texts = read_texts(config)
    tokenizer = load_tokenizer(run_dir)
    if config.translation:
        data = _translation_data(config, tokenizer, texts, notes, config.max_len or max_len)
    else:
        data = _language_model_data(config, tokenizer, texts)
    data.notes = notes + data.notes
    return data


def read_texts(config: DataConfig) -> tuple[list[tuple[str, str]] | str, ...]:
    """(train, valid) as sentence pairs (translation) or whole texts (language modelling)."""
    train_split, valid_split = SPLITS[config.dataset][:2]
    return tuple(
        read_split(
            config.dataset,
            split,
            src=config.src,
            tgt=config.tgt,
            data_dir=config.data_dir,
            train_files=config.train_files,
            valid_files=config.valid_files,
        )
        for split in (train_split, valid_split)
    )


def prepare_tokenizer(
    config: DataConfig,
    run_dir: Path,
    train: list[tuple[str, str]] | str,
    *,
    init_from: str | Path | None = None,
    source: Path | None = None,
) -> str:
    """Make sure the run directory has a tokenizer; returns a line saying where it came from.
    `source`: a folder whose tokenizer the data was encoded with (binarized shards)."""
    path = run_dir / TOKENIZER_FILE
    try:
        load_tokenizer(run_dir)  # a resumed run's
        return f"tokenizer: the one in {run_dir} (kept)"
    except FileNotFoundError:
        pass
    if init_from is not None:
        load_tokenizer(init_from).save_to(run_dir)
        return f"tokenizer: copied from {init_from} (train.init_from)"
    if source is not None:
        load_tokenizer(source).save_to(run_dir)
        return f"tokenizer: copied from {source} (the one its ids were made with)"
    if config.tokenizer is not None:
        Tokenizer.load(config.tokenizer).save(path)  # checked, and written atomically
        return f"tokenizer: copied {config.tokenizer}"
    if isinstance(train, str):
        sentences = train.split("\n")
    else:
        sentences = [s for s, _ in train] + [t for _, t in train]
    tokenizer, path = train_tokenizer(
        sentences, run_dir, model_type=config.tokenizer_type, vocab_size=config.vocab_size
    )
    return (
        f"tokenizer: trained {config.tokenizer_type} with {tokenizer.vocab_size} pieces on "
        f"{len(sentences)} training sentences -> {path}"
    )


def _translation_data(
    config: DataConfig, tokenizer: TextTokenizer, texts: tuple, notes: list[str], max_len: int
) -> TaskData:
    splits = []
    for name, pairs in zip(("train", "valid"), texts, strict=True):
        ids = list(
            zip(
                tokenizer.encode_batch([s for s, _ in pairs]),
                tokenizer.encode_batch([t for _, t in pairs], target=True),
                strict=True,
            )
        )
        kept, report = filter_pairs(
            ids, max_len=max_len, max_ratio=config.max_ratio, policy="skip", name=name
        )
        if not kept:
            raise ValueError(f"no {name} pairs left after filtering: {report}")
        notes.append(str(report))
        splits.append(_pair_split(kept, tokenizer))
    return TaskData(tokenizer, splits[0], splits[1], valid_pairs=list(texts[1]))


def _binarized_data(
    config: DataConfig,
    run_dir: Path,
    ctx: DistributedContext,
    max_len: int,
    init_from: str | Path | None,
) -> TaskData:
    """Splits of a binarized folder (`aiayn.data.binarized`): lengths and filtering from the
    index, ids read from the memory-mapped shards only when a batch needs them. The folder's
    tokenizer is the run's (a resumed run keeps its own; fine-tuning takes `init_from`'s)."""
    if config.data_dir is None:
        raise ValueError("dataset binarized reads the folder in data.data_dir; none given")
    folder = Path(config.data_dir)
    notes: list[str] = []
    if ctx.is_main:
        notes.append(prepare_tokenizer(config, run_dir, [], init_from=init_from, source=folder))
    barrier(ctx)
    tokenizer = load_tokenizer(run_dir)
    specials = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    splits = []
    for name in ("train", "valid"):
        pairs = BinarizedPairs(folder, name)
        if pairs.vocab_size > tokenizer.vocab_size:
            raise ValueError(f"{folder}: ids of {pairs.vocab_size} pieces, the run's tokenizer "
                             f"has {tokenizer.vocab_size}")  # fmt: skip
        lengths = pairs.lengths()
        kept, report = filter_lengths(
            lengths, max_len=max_len, max_ratio=config.max_ratio, name=name
        )
        if not len(kept):
            raise ValueError(f"no {name} pairs left after filtering: {report}")
        notes.append(str(report))
        kept = kept.astype(np.int32 if len(pairs) < 2**31 else np.int64)  # 4 bytes a pair

        def make_batch(indices: Sequence[int], pairs=pairs, kept=kept) -> Batch:
            rows = [pairs[int(kept[i])] for i in indices]
            return collate([(s.tolist(), t.tolist()) for s, t in rows], index=indices, **specials)

        splits.append(Split((lengths[kept].max(axis=1) + 1).astype(np.int32), make_batch))
    valid = read_split("binarized", "valid", data_dir=folder)
    return TaskData(tokenizer, splits[0], splits[1], valid_pairs=valid, notes=notes)


def _pair_split(pairs: list[tuple[list[int], list[int]]], tokenizer: TextTokenizer) -> Split:
    specials = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)

    def make_batch(indices: Sequence[int]) -> Batch:
        return collate([pairs[i] for i in indices], index=indices, **specials)

    return Split(example_lengths(pairs), make_batch)


def _language_model_data(config: DataConfig, tokenizer: TextTokenizer, texts: tuple) -> TaskData:
    splits = []
    for text in texts:
        tokens = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        starts = window_starts(len(tokens), config.seq_len)
        splits.append(_window_split(tokens, starts, config.seq_len))
    return TaskData(tokenizer, splits[0], splits[1])


def _window_split(tokens: torch.Tensor, starts: list[int], seq_len: int) -> Split:
    def make_batch(indices: Sequence[int]) -> Batch:
        return lm_batch(tokens, [starts[i] for i in indices], seq_len)

    return Split([seq_len] * len(starts), make_batch)
