"""Sentence pairs tokenized once into memory-mapped shards, for corpora too big to hold as Python
lists (the paper's WMT14: 4.5M and 36M pairs), in the spirit of fairseq's indexed datasets and
nanoGPT's `train.bin`. Written by `binarize_pairs` (`aiayn data binarize`), read by
`BinarizedPairs` without loading the tokens.

Format, version 1. A folder holds:

    binarized.json        the header (written last: a folder without it is incomplete)
    <tokenizer file>      the tokenizer the ids belong to (`load_tokenizer` reads the folder)
    <split>-NNNNN.bin     token ids, little-endian uint16 (vocabularies up to 65,536) or uint32;
                          pair i's source ids, then its target ids, no BOS/EOS/padding
    <split>-NNNNN.idx     little-endian int64, one row per pair: (offset in ids, source length,
                          target length)

The header (JSON) holds `format` ("aiayn-binarized"), `version` (1), `dtype`, `vocab_size`, and
per split its shards: name, pairs, ids and the sha256 of both files. Shards hold at most
`shard_pairs` pairs, so writing keeps one shard's index in memory whatever the corpus size, and
tokenization runs in worker processes over chunks of lines, streamed from plain or gzip files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice, zip_longest
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aiayn.data.corpus import iter_lines
from aiayn.data.tokenizer import TextTokenizer, load_tokenizer
from aiayn.files import atomic_write

FORMAT, VERSION = "aiayn-binarized", 1
HEADER_FILE = "binarized.json"
INDEX_COLUMNS = 3  # offset, source length, target length
DEFAULT_SHARD_PAIRS = 1_000_000
CHUNK_PAIRS = 4096
"""Pairs per task sent to a worker process."""


@dataclass(frozen=True)
class Shard:
    name: str
    pairs: int
    ids: int
    bin_sha256: str
    idx_sha256: str


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies of up to 65,536 ids, else uint32 (little-endian)."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def binarize_pairs(
    source: str | Path,
    target: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "train",
    shard_pairs: int = DEFAULT_SHARD_PAIRS,
    workers: int | None = None,
    progress: bool = True,
) -> list[Shard]:
    """Tokenize line-aligned `source` and `target` files (plain or .gz) with the tokenizer in
    `tokenizer_dir` into `split` shards of `out_dir`, and add the split to its header.

    Raises:
        ValueError: The files differ in length (naming both and the line), a line is not
            UTF-8, the folder's header was made with another tokenizer or holds `split` already.
    """
    if shard_pairs < 1:
        raise ValueError(f"shard_pairs must be positive, got {shard_pairs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    header = _start_header(out_dir, tokenizer, split)
    dtype = np.dtype(header["dtype"])
    workers = workers or max(1, min(8, len(os.sched_getaffinity(0))))
    shards: list[Shard] = []
    chunks = _chunks(_pairs(Path(source), Path(target)), CHUNK_PAIRS)
    bar = tqdm(unit=" pairs", disable=not progress, desc=f"binarize {split}")
    with get_context("spawn").Pool(workers, _load_worker, (str(tokenizer_dir),)) as pool:
        writer = _ShardWriter(out_dir, split, dtype, shard_pairs, shards)
        for encoded in pool.imap(_encode_chunk, chunks):
            for src_ids, tgt_ids in encoded:
                writer.add(src_ids, tgt_ids)
            bar.update(len(encoded))
        writer.close()
    bar.close()
    header["splits"][split] = [shard.__dict__ for shard in shards]
    atomic_write(out_dir / HEADER_FILE, json.dumps(header, indent=1) + "\n")
    return shards


class BinarizedPairs:
    """One split of a binarized folder, memory-mapped: `lengths` from the index alone, pair i's
    ids as numpy views.

    Raises (constructor):
        FileNotFoundError: No header (not binarized, or binarizing did not finish).
        ValueError: Another format or version, an unknown split, or (with `verify`) a shard
            whose bytes do not match the header's sha256 (naming the file).
    """

    def __init__(self, folder: str | Path, split: str = "train", *, verify: bool = False):
        folder = Path(folder)
        header = read_header(folder)
        if split not in header["splits"]:
            raise ValueError(f"{folder}: no split {split!r}; it has {sorted(header['splits'])}")
        self.dtype = np.dtype(header["dtype"])
        self.vocab_size = int(header["vocab_size"])
        self.shards = [Shard(**s) for s in header["splits"][split]]
        if verify:
            for shard in self.shards:
                for suffix, digest in ((".bin", shard.bin_sha256), (".idx", shard.idx_sha256)):
                    if _sha256(folder / f"{shard.name}{suffix}") != digest:
                        raise ValueError(f"{folder / shard.name}{suffix}: sha256 does not match "
                                         f"{HEADER_FILE} (corrupt or changed)")  # fmt: skip
        self._ids = [_memmap(folder / f"{s.name}.bin", self.dtype, (s.ids,)) for s in self.shards]
        self._index = [
            _memmap(folder / f"{s.name}.idx", np.dtype("<i8"), (s.pairs, INDEX_COLUMNS))
            for s in self.shards
        ]
        self._starts = np.cumsum([0] + [s.pairs for s in self.shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lengths(self) -> np.ndarray:
        """(pairs, 2) source and target lengths (no specials), read from the index only."""
        if not self._index:
            return np.zeros((0, 2), dtype=np.int64)
        return np.concatenate([index[:, 1:] for index in self._index])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} of {len(self)}")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        offset, n_src, n_tgt = (int(x) for x in self._index[shard][i - self._starts[shard]])
        ids = self._ids[shard]
        return ids[offset : offset + n_src], ids[offset + n_src : offset + n_src + n_tgt]


def decoded_pairs(folder: str | Path, split: str) -> list[tuple[str, str]]:
    """A split's pairs as text again, through the folder's tokenizer (SentencePiece decodes
    what it encoded exactly): for validation BLEU and `aiayn evaluate`, not for big splits."""
    tokenizer = load_tokenizer(folder)
    pairs = BinarizedPairs(folder, split)
    return [(tokenizer.decode(s.tolist()), tokenizer.decode(t.tolist())) for s, t in
            (pairs[i] for i in range(len(pairs)))]  # fmt: skip


def read_header(folder: str | Path) -> dict:
    """The header of a binarized folder, checked for format and version."""
    file = Path(folder) / HEADER_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: not found; {folder} is not binarized, or `aiayn data binarize` did not "
            "finish (run it again)"
        )
    header = json.loads(file.read_text())
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(
            f"{file}: format {header.get('format')!r} version {header.get('version')!r}; this "
            f"aiayn reads {FORMAT!r} version {VERSION}"
        )
    return header


class _ShardWriter:
    """Appends pairs to the current shard's files; closes a shard at `shard_pairs` pairs."""

    def __init__(self, out_dir: Path, split: str, dtype, shard_pairs: int, done: list[Shard]):
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shard_pairs, self.done = shard_pairs, done
        self.file = None

    def add(self, src_ids: list[int], tgt_ids: list[int]) -> None:
        if self.file is None:
            self._open()
        ids = np.asarray(src_ids + tgt_ids, dtype=self.dtype)
        data = ids.tobytes()
        self.file.write(data)
        self.hash.update(data)
        self.index.append((self.n_ids, len(src_ids), len(tgt_ids)))
        self.n_ids += len(ids)
        if len(self.index) == self.shard_pairs:
            self._finish()

    def close(self) -> None:
        if self.file is not None:
            self._finish()

    def _open(self) -> None:
        self.name = f"{self.split}-{len(self.done):05d}"
        self.file = open(self.out_dir / f"{self.name}.bin.tmp", "wb")
        self.hash, self.index, self.n_ids = hashlib.sha256(), [], 0

    def _finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        index = np.asarray(self.index, dtype="<i8").reshape(-1, INDEX_COLUMNS).tobytes()
        atomic_write(self.out_dir / f"{self.name}.idx", index)
        os.replace(self.out_dir / f"{self.name}.bin.tmp", self.out_dir / f"{self.name}.bin")
        self.done.append(Shard(self.name, len(self.index), self.n_ids, self.hash.hexdigest(),
                               hashlib.sha256(index).hexdigest()))  # fmt: skip


def _start_header(out_dir: Path, tokenizer: TextTokenizer, split: str) -> dict:
    """The folder's header so far (another split may be there), or a new one; the tokenizer is
    copied into the folder, or must equal the one there."""
    try:
        header = read_header(out_dir)
    except FileNotFoundError:
        tokenizer.save_to(out_dir)
        return {"format": FORMAT, "version": VERSION, "dtype": id_dtype(tokenizer.vocab_size).str,
                "vocab_size": tokenizer.vocab_size, "splits": {}}  # fmt: skip
    there = load_tokenizer(out_dir)
    if there.vocab_size != tokenizer.vocab_size or _pieces(there) != _pieces(tokenizer):
        raise ValueError(f"{out_dir} was binarized with another tokenizer")
    if split in header["splits"]:
        raise ValueError(f"{out_dir} holds split {split!r} already; use a new folder or split")
    return header


def _pieces(tokenizer: TextTokenizer) -> list[str]:
    return [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]


def _pairs(source: Path, target: Path) -> Iterator[tuple[str, str]]:
    """Line pairs of two files, streamed (plain or gzip); unequal lengths and invalid UTF-8
    are errors naming the file and line."""
    number, end = 0, object()
    for s, t in zip_longest(iter_lines(source), iter_lines(target), fillvalue=end):
        if s is end or t is end:
            short, long = (source, target) if s is end else (target, source)
            raise ValueError(f"parallel files differ in length: {short} has {number} lines, "
                             f"{long} more")  # fmt: skip
        number += 1
        yield s, t


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(items, size)):
        yield chunk


_worker_tokenizer: TextTokenizer | None = None


def _load_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _encode_chunk(chunk: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    src = _worker_tokenizer.encode_batch([s for s, _ in chunk])
    tgt = _worker_tokenizer.encode_batch([t for _, t in chunk], target=True)
    return list(zip(src, tgt, strict=True))


def _memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
