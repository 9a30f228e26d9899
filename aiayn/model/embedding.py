"""Embeddings and positions (§3.4, §3.5), plus rotary positions (RoPE) as an option.

§3.4: "we multiply those weights by sqrt(d_model)". §3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
PE(pos, 2i+1) = cos(pos / 10000^(2i/d)) -- sines and cosines interleaved, added to the embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """Token ids to vectors, scaled by sqrt(d_model) as in §3.4 (unless `scale=False`).

    Shape:
        tokens: (batch, len) int64 -> (batch, len, d_model)
    """

    def __init__(self, vocab_size: int, d_model: int, *, pad_id: int, scale: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        self.pad_id = pad_id
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.embedding(tokens, self.weight) * self.scale


def sinusoids(max_len: int, d_model: int, layout: str = "interleaved") -> Tensor:
    """The paper's table of positions (§3.5): (max_len, d_model), sin on even, cos on odd dims;
    with `layout="halves"` the same values, sines in the first half and cosines in the second
    (tensor2tensor, Marian)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model/2,)
    angle = position / 10000.0 ** (two_i / d_model)  # (max_len, d_model/2)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    if layout == "halves":
        half = (d_model + 1) // 2
        table[:, :half] = torch.sin(angle)
        table[:, half:] = torch.cos(angle[:, : d_model // 2])
    else:
        table[:, 0::2] = torch.sin(angle)
        table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal positions (§3.5), added to the embeddings.

    Shape:
        x: (batch, len, d_model), offset: first position of x -> (batch, len, d_model)
    """

    def __init__(self, max_len: int, d_model: int, layout: str = "interleaved") -> None:
        super().__init__()
        self.register_buffer("table", sinusoids(max_len, d_model, layout), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        return x + rows(self.table, offset, x.size(1)).to(x.dtype)


class LearnedPositions(nn.Module):
    """Learned absolute positions (Table 3, row E; GPT-2), added to the embeddings.

    Shape:
        x: (batch, len, d_model), offset: first position of x -> (batch, len, d_model)
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        return x + rows(self.weight, offset, x.size(1))


class RotaryEmbedding(nn.Module):
    """Rotary positions (RoPE, Su et al. 2021), a departure from the paper: instead of adding
    positions to the input, each (even, odd) pair of query/key dims is rotated by pos * theta_i,
    so q.k depends only on the distance between positions.

    Shape:
        x: (batch, heads, len, d_head), offset: first position of x -> same shape
    """

    def __init__(self, max_len: int, d_head: int, base: float = 10000.0) -> None:
        super().__init__()
        theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
        angle = torch.arange(max_len, dtype=torch.float64)[:, None] * theta  # (max_len, d_head/2)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        cos = rows(self.cos, offset, x.size(2)).to(x.dtype)  # (len, d_head/2)
        sin = rows(self.sin, offset, x.size(2)).to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]  # (batch, heads, len, d_head/2)
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return rotated.flatten(-2)  # interleave back: (batch, heads, len, d_head)


def rows(table: Tensor, offset: int | Tensor, length: int) -> Tensor:
    """table[offset : offset + length], the positions from `offset` on. A tensor offset (the
    (1,) position a `StaticKVCache` keeps) gathers the rows instead of slicing, so a compiled
    decoder step does not depend on its value; the cache's capacity bounds it."""
    if isinstance(offset, Tensor):
        return table.index_select(0, offset + torch.arange(length, device=offset.device))
    check_length(offset + length, table.size(0))
    return table[offset : offset + length]


def check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(
            f"sequence of {length} positions exceeds the model's max_len ({max_len}); "
            "truncate the input or build the model with a larger max_len"
        )
