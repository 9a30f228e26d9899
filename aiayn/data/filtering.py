"""Cleaning of tokenised sentence pairs before training: empty sides, pairs too long for the
model's positions, and pairs whose length ratio betrays a misalignment (as Moses' clean-corpus-n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Policy = Literal["skip", "truncate", "error"]
POLICIES = ("skip", "truncate", "error")
Pair = tuple[list[int], list[int]]
DEFAULT_MAX_RATIO = 9.0
"""Moses' clean-corpus-n.perl default: a 10x longer side is almost surely a misalignment."""


@dataclass
class FilterReport:
    """What `filter_pairs` did to one split; `str()` is a one-line summary."""

    name: str = ""
    """The split (or file) the counts are about."""
    total: int = 0
    empty: int = 0
    """Dropped: a side with no tokens (an empty line)."""
    too_long: int = 0
    """Dropped (policy `skip`): a side longer than `max_len` with its EOS/BOS."""
    bad_ratio: int = 0
    """Dropped: one side more than `max_ratio` times longer than the other."""
    truncated: int = 0
    """Kept but cut to `max_len` (policy `truncate`)."""

    @property
    def kept(self) -> int:
        return self.total - self.empty - self.too_long - self.bad_ratio

    def __str__(self) -> str:
        head = f"{self.name}: " if self.name else ""
        return (
            f"{head}kept {self.kept} of {self.total} pairs; dropped {self.empty} empty, "
            f"{self.too_long} too long, {self.bad_ratio} bad length ratio; "
            f"truncated {self.truncated}"
        )


def filter_pairs(
    pairs_ids: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    max_len: int,
    max_ratio: float = DEFAULT_MAX_RATIO,
    policy: Policy = "skip",
    name: str = "",
    files: tuple[str | Path, str | Path] | None = None,
) -> tuple[list[Pair], FilterReport]:
    """Drop (or truncate, or refuse) the pairs a Transformer should not train on.

    Rules, applied in this order, each pair counted under the first it breaks:
    empty (either side has no tokens), too long (`len + 1 > max_len`, the 1 being the EOS or BOS
    the batcher adds, so `max_len` is the model's `max_len`), bad ratio (the longer side over
    `max_ratio` times the shorter, measured after truncation).

    Args:
        pairs_ids: (source ids, target ids) per line, in file order.
        max_len: Longest sequence the model takes, specials included.
        max_ratio: Largest allowed length ratio (Moses' default is 9).
        policy: `skip` drops offending pairs; `truncate` cuts long sides to fit and skips the
            other offences; `error` raises on the first offending pair.
        name: Split name for the report.
        files: (source file, target file), named in errors; without it errors name the pair.

    Returns:
        The kept pairs (as lists) and a report counting what was dropped.

    Raises:
        ValueError: Under policy `error`, naming both files and the line; or bad arguments.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown filter policy {policy!r}; choose from {POLICIES}")
    if max_len < 2 or max_ratio < 1.0:
        raise ValueError(f"need max_len >= 2 and max_ratio >= 1, got {max_len}, {max_ratio}")
    report, kept = FilterReport(name=name, total=len(pairs_ids)), []
    for line, (src, tgt) in enumerate(pairs_ids, start=1):
        src, tgt = list(src), list(tgt)
        problem = _problem(src, tgt, max_len, max_ratio)
        if problem == "too_long" and policy == "truncate":
            src, tgt = src[: max_len - 1], tgt[: max_len - 1]
            report.truncated += 1
            problem = _problem(src, tgt, max_len, max_ratio)
        if problem is None:
            kept.append((src, tgt))
        elif policy == "error":
            raise ValueError(
                f"{_where(files, line)}: {_describe(problem, src, tgt, max_len, max_ratio)}"
            )
        else:
            setattr(report, problem, getattr(report, problem) + 1)
    return kept, report


def filter_lengths(
    lengths: np.ndarray, *, max_len: int, max_ratio: float = DEFAULT_MAX_RATIO, name: str = ""
) -> tuple[np.ndarray, FilterReport]:
    """`filter_pairs`' rules (policy `skip`) on (pairs, 2) source and target lengths alone, for
    corpora whose ids stay on disk (`aiayn.data.binarized`). Returns the indices kept, in
    order, and the report."""
    if max_len < 2 or max_ratio < 1.0:
        raise ValueError(f"need max_len >= 2 and max_ratio >= 1, got {max_len}, {max_ratio}")
    src, tgt = lengths[:, 0], lengths[:, 1]
    longer, shorter = np.maximum(src, tgt), np.minimum(src, tgt)
    empty = shorter == 0
    too_long = ~empty & (longer + 1 > max_len)
    bad_ratio = ~empty & ~too_long & (longer > max_ratio * shorter)
    report = FilterReport(name=name, total=len(lengths), empty=int(empty.sum()),
                          too_long=int(too_long.sum()), bad_ratio=int(bad_ratio.sum()))  # fmt: skip
    return np.flatnonzero(~(empty | too_long | bad_ratio)), report


def _problem(src: list[int], tgt: list[int], max_len: int, max_ratio: float) -> str | None:
    if not src or not tgt:
        return "empty"
    if max(len(src), len(tgt)) + 1 > max_len:
        return "too_long"
    if max(len(src), len(tgt)) > max_ratio * min(len(src), len(tgt)):
        return "bad_ratio"
    return None


def _where(files: tuple[str | Path, str | Path] | None, line: int) -> str:
    if files is None:
        return f"pair {line}"
    return f"{files[0]}:{line} / {files[1]}:{line}"


def _describe(problem: str, src: list[int], tgt: list[int], max_len: int, max_ratio: float) -> str:
    lengths = f"source {len(src)} tokens, target {len(tgt)} tokens"
    if problem == "empty":
        return f"empty sentence ({lengths})"
    if problem == "too_long":
        return f"pair too long ({lengths}; max_len {max_len} counts EOS/BOS)"
    return f"length ratio above {max_ratio} ({lengths})"
