"""The only place attention masks are built and checked.

One convention everywhere: boolean, True = may attend (as F.scaled_dot_product_attention),
broadcastable to (batch, heads, q_len, k_len). Padding travels as `valid` (batch, len), True on
real tokens; the decoder's mask is causal (§3.2.3: "prevent leftward information flow").
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(valid: Tensor) -> Tensor:
    """Keys that are real tokens: (batch, k_len) -> (batch, 1, 1, k_len)."""
    if valid.dtype != torch.bool or valid.dim() != 2:
        raise ValueError(
            "valid must be a boolean tensor of shape (batch, len), True on real tokens; "
            f"got dtype {valid.dtype}, shape {tuple(valid.shape)}"
        )
    return valid[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None, device: torch.device | None = None) -> Tensor:
    """Query i may attend keys up to its own position: (1, 1, q_len, k_len).

    With a cache, the q_len new queries are the last positions of k_len keys, so query i sits
    at position k_len - q_len + i.
    """
    k_len = q_len if k_len is None else k_len
    if k_len < q_len:
        raise ValueError(f"causal mask needs k_len >= q_len, got q_len={q_len}, k_len={k_len}")
    ones = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=k_len - q_len)[None, None]


def decoder_mask(q_len: int, k_len: int, valid: Tensor | None, device: torch.device) -> Tensor:
    """Causal mask, combined with key padding when `valid` (batch, k_len) is given."""
    mask = causal_mask(q_len, k_len, device)
    if valid is not None:
        mask = mask & padding_mask(valid)
    return mask


def check_mask(mask: Tensor, batch: int, heads: int, q_len: int, k_len: int) -> None:
    """Raise a ValueError that states the convention unless `mask` follows it."""
    expected = (batch, heads, q_len, k_len)
    ok = mask.dtype == torch.bool and mask.dim() == 4
    if ok:
        ok = all(m in (1, e) for m, e in zip(mask.shape, expected, strict=True))
    if not ok:
        raise ValueError(
            "attention mask must be a boolean tensor broadcastable to (batch, heads, q_len, "
            f"k_len) = {expected}, True = may attend; got dtype {mask.dtype}, "
            f"shape {tuple(mask.shape)}"
        )
