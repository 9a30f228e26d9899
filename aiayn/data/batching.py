"""Token ids to tensors: the `Batch`, collation with padding, fixed-length language-model windows,
and a sampler that fills batches up to a token budget (§5.1: ~25,000 source and target tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    """A batch for teacher forcing, right-padded, batch first.

    Translation: `src` is source ids + EOS (no BOS, as fairseq); `tgt_in` is BOS + target and
    `tgt_out` is target + EOS, the same sequence shifted by one. Language modelling uses the same
    class with `src` and `src_valid` None: `tgt_in = x[:-1]`, `tgt_out = x[1:]` of a window x.

    Shape:
        src, src_valid: (batch, src_len); int64 ids, bool True on real tokens.
        tgt_in, tgt_out, tgt_valid: (batch, tgt_len).
    """

    src: Tensor | None
    src_valid: Tensor | None
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_valid: Tensor
    n_src_tokens: int
    """Real source tokens (EOS included, padding not)."""
    n_tgt_tokens: int
    """Real target tokens: the number of predictions the loss is averaged over."""
    index: list[int]
    """Example (or window) indices of the rows, in row order."""

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on `device`."""
        moved = {
            field.name: value.to(device, non_blocking=non_blocking)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), Tensor)
        }
        return dataclasses.replace(self, **moved)


def example_lengths(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[int]:
    """Per pair, the padded length it needs on either side: max(source + EOS, BOS + target).

    `TokenBatchSampler` bounds batch size times the longest of these, so both the source and
    the target tensor of every batch hold at most `max_tokens` slots, padding included.
    """
    return [max(len(src), len(tgt)) + 1 for src, tgt in pairs]


def collate(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    index: Sequence[int] | None = None,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> Batch:
    """Make a `Batch` from (source ids, target ids) pairs without specials.

    Args:
        pairs: Token ids per example, as `Tokenizer.encode` returns them.
        index: Example indices to record in the batch; defaults to 0..len-1.
    """
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    src_lens = [len(src) + 1 for src, _ in pairs]
    tgt_lens = [len(tgt) + 1 for _, tgt in pairs]
    src = np.full((len(pairs), max(src_lens)), pad_id, dtype=np.int64)
    tgt_in = np.full((len(pairs), max(tgt_lens)), pad_id, dtype=np.int64)
    tgt_out = np.full_like(tgt_in, pad_id)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)], src[row, len(s)] = s, eos_id
        tgt_in[row, 0], tgt_in[row, 1 : len(t) + 1] = bos_id, t
        tgt_out[row, : len(t)], tgt_out[row, len(t)] = t, eos_id
    return Batch(
        src=torch.from_numpy(src),
        src_valid=_valid(src_lens, src.shape[1]),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        tgt_valid=_valid(tgt_lens, tgt_in.shape[1]),
        n_src_tokens=sum(src_lens),
        n_tgt_tokens=sum(tgt_lens),
        index=list(range(len(pairs))) if index is None else [int(i) for i in index],
    )


def _valid(lengths: list[int], width: int) -> Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def window_starts(num_tokens: int, seq_len: int) -> list[int]:
    """Starts of the non-overlapping windows of `seq_len + 1` tokens that fit in a stream.

    Window i covers tokens [i * seq_len, (i + 1) * seq_len]: its last token is the first of the
    next window, so every token but the first is predicted exactly once per epoch.
    """
    if seq_len < 1 or num_tokens < seq_len + 1:
        raise ValueError(f"a stream of {num_tokens} tokens has no window of {seq_len} + 1 tokens")
    return list(range(0, num_tokens - seq_len, seq_len))


def lm_batch(tokens: Tensor, starts: Sequence[int], seq_len: int) -> Batch:
    """A language-model `Batch` of windows x = tokens[s : s + seq_len + 1] for s in `starts`.

    `tgt_in = x[:, :-1]`, `tgt_out = x[:, 1:]`, both (batch, seq_len); `src` is None and
    `index` holds the starts. Use `window_starts` with a `TokenBatchSampler` (all lengths
    `seq_len`) for shuffled, resumable, sharded epochs over the windows.
    """
    offsets = torch.as_tensor(list(starts), dtype=torch.long)[:, None]
    x = tokens.long()[offsets + torch.arange(seq_len + 1)]  # (batch, seq_len + 1)
    return Batch(
        src=None,
        src_valid=None,
        tgt_in=x[:, :-1],
        tgt_out=x[:, 1:],
        tgt_valid=torch.ones(len(starts), seq_len, dtype=torch.bool),
        n_src_tokens=0,
        n_tgt_tokens=len(starts) * seq_len,
        index=[int(s) for s in starts],
    )


class TokenBatchSampler:
    """Batches of example indices filling a token budget, shuffled per epoch, resumable, sharded.

    Each epoch: shuffle (from `seed` and the epoch), stable-sort by length within buckets of
    `bucket_size` examples (None: the whole set, as fairseq), cut the sorted run greedily into
    batches whose `len(batch) * max(length)` -- tokens counted with padding, like fairseq's
    `--max-tokens` -- stays within `max_tokens`, then shuffle the batch order. With
    `world_size > 1`, the largest batches are halved until the count divides evenly and rank r
    takes batches r, r + world_size, ...: every rank gets the same number of batches and every
    example goes to exactly one rank, once, per epoch (nothing is repeated or dropped). Only
    when there are fewer examples than the next multiple of `world_size` above the batch count
    is this impossible; the sampler then raises `ValueError`.

    Iterating yields the rest of the current epoch from `position`; when the last batch is
    yielded the sampler moves to the next epoch. `state_dict`/`load_state_dict` save and
    restore (epoch, position) so a resumed run sees exactly the batches it had not yet seen.

    Args:
        lengths: Padded length of each example (see `example_lengths`).
        max_tokens: Token budget per batch and side (the paper's ~25,000).
        seed: Seed of the per-epoch shuffles; the same on every rank.
        shuffle: False gives the same length-sorted batches every epoch (for evaluation).
        rank: This process's rank in data-parallel training.
        world_size: Number of ranks.
        bucket_size: Examples per length-sorted bucket; smaller trades padding for randomness.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        bucket_size: int | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int32)  # 4 bytes a pair: 5M pairs, 20 MB
        if self.lengths.ndim != 1 or len(self.lengths) < world_size:
            raise ValueError(f"need at least {world_size} examples, got {len(self.lengths)}")
        if self.lengths.min() < 1:
            shortest = int(self.lengths.argmin())
            raise ValueError(f"example {shortest} has length {self.lengths[shortest]}, below 1")
        if self.lengths.max() > max_tokens:
            longest = int(self.lengths.argmax())
            raise ValueError(
                f"example {longest} has {self.lengths[longest]} tokens, more than max_tokens "
                f"{max_tokens}; filter long pairs first (filter_pairs) or raise max_tokens"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be positive or None, got {bucket_size}")
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.rank, self.world_size, self.bucket_size = rank, world_size, bucket_size
        self.epoch, self.position = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of `epoch`; the current epoch keeps its position (for resuming)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch."""
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        for i in range(self.position, len(batches)):
            self.position = i + 1
            if self.position == len(batches):
                self.epoch, self.position = self.epoch + 1, 0
            yield batches[i].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches already yielded in it, with the settings that fix the order."""
        return {"epoch": self.epoch, "position": self.position, **self._settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; the settings must match, or the order would differ."""
        saved = {key: state[key] for key in self._settings() if key in state}
        if saved != {key: self._settings()[key] for key in saved}:
            raise ValueError(
                f"sampler state was saved with {saved}, this sampler has {self._settings()}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "num_examples": len(self.lengths),
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "bucket_size": self.bucket_size,
        }

    def _rank_batches(self) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._epoch_batches())
        return self._cache[1][self.rank :: self.world_size]

    def _epoch_batches(self) -> list[np.ndarray]:
        """All ranks' batches of the current epoch, identical on every rank: views into one
        array of the epoch's example order (memory: a few bytes per example, no Python ints)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        order = order.astype(np.int32 if n < 2**31 else np.int64)
        bucket = self.bucket_size or n
        batches = []
        for start in range(0, n, bucket):
            chunk = order[start : start + bucket]
            chunk[:] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += _pack(chunk, self.lengths[chunk], self.max_tokens)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return _split_until_divisible(batches, self.world_size)


def _pack(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut length-sorted indices greedily into batches of at most `max_tokens` padded tokens:
    each batch takes examples while (examples so far + 1) x the next one's length (the
    longest, the order being sorted) fits. `lengths` are the lengths of `order`, ascending."""
    batches, start, n = [], 0, len(order)
    while start < n:
        most = min(n - start, max_tokens // int(lengths[start]))  # the length only grows
        counts = np.arange(1, most + 1)
        fits = counts * lengths[start : start + most] <= max_tokens
        end = start + (most if fits.all() else max(1, int(fits.argmin())))
        batches.append(order[start:end])
        start = end
    return batches


def _split_until_divisible(batches: list[np.ndarray], world_size: int) -> list[np.ndarray]:
    """Halve the largest batches until every rank can get the same number of them."""
    n_examples = sum(map(len, batches))
    target = -(-len(batches) // world_size) * world_size
    if target > n_examples:
        raise ValueError(
            f"cannot give {world_size} ranks equal numbers of batches: {len(batches)} batches "
            f"of {n_examples} examples cannot become {target}; raise max_tokens or use fewer ranks"
        )
    batches = list(batches)
    while len(batches) < target:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        big = batches[largest]
        batches[largest : largest + 1] = [big[: len(big) // 2], big[len(big) // 2 :]]
    return batches


def iterate_batches(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], sampler: TokenBatchSampler
) -> Iterator[Batch]:
    """The rest of the sampler's epoch as collated `Batch`es of `pairs`."""
    for indices in sampler:
        yield collate([pairs[i] for i in indices], index=indices)
