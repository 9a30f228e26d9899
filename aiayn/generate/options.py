"""The one set of decoding options: beam search (§6.1), length limits and sampling. The YAML
`decode:` section, the command line's flags, the Python API and the decoder all take it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

LongInput = Literal["truncate", "error"]


def check_sampling(*, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> None:
    """Raise a ValueError naming the offending value unless the sampling settings make sense."""
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got {temperature=}, "
            f"{top_k=}, {top_p=}"
        )


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode; every field is checked when the object is made."""

    beam: int = 4
    """Beam size (§6.1: 4); 1 is greedy search."""
    alpha: float = 0.6
    """GNMT length penalty exponent (§6.1: 0.6); 0 ranks hypotheses by log P alone."""
    coverage: float = 0.0
    """GNMT coverage penalty weight beta (0: off)."""
    max_len_a: float = 1.5
    """Output length limit = max_len_a * source length + max_len_b. The default, 1.5 x + 10,
    suits short sentences; the paper's is input length + 50 (§6.1: a = 1, b = 50), which the
    WMT14 configs set."""
    max_len_b: int = 10
    """See `max_len_a`."""
    min_len: int = 0
    """No EOS before this many output tokens."""
    n_best: int = 1
    """Hypotheses kept per sentence (at most `beam`)."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    top_k: int = 0
    """Sample from the k most likely tokens only (0: all)."""
    top_p: float = 1.0
    """Sample from the smallest set of tokens holding this probability (1: all)."""
    max_new_tokens: int = 200
    """Language models: tokens to generate after the prompt."""
    seed: int | None = None
    """Seeds sampling (None: torch's global generator)."""
    long_input: LongInput = "truncate"
    """An input longer than the model's positions: cut it with a warning, or refuse it."""

    def __post_init__(self) -> None:
        for name in ("beam", "n_best"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_best > self.beam:
            raise ValueError(f"n_best ({self.n_best}) cannot exceed beam ({self.beam})")
        for name in ("alpha", "coverage", "max_len_a", "max_len_b", "min_len"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.long_input not in ("truncate", "error"):
            raise ValueError(f"long_input must be 'truncate' or 'error', got {self.long_input!r}")

    def replace(self, **changes: object) -> DecodeOptions:
        """A copy with the given fields changed; None leaves a field as it is (so unset
        command-line flags and keyword arguments keep the run's settings)."""
        given = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given)
