"""Key/value caches for incremental decoding: each step computes only the newest position.

A `KVCache` holds one attention layer's keys and values; a `DecoderCache` holds one per layer
for self-attention (growing by a step at a time) and for cross-attention (computed once from the
encoder output and reused).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of one attention layer, (batch, heads, time, d_head) each.

    Storage grows geometrically, so appending a step copies only the new step. Reordering (beam
    search, every step) gathers only the positions in use, into a second buffer of the same
    capacity that is kept for the next reorder: no allocation and no copy of unused capacity.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._spare: tuple[Tensor, Tensor] | None = None  # reorder's target, same shape
        self._owned = False  # False while _k/_v are the tensors given to `set`: never reused
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def k(self) -> Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add `t` new positions (batch, heads, t, d_head); return all keys and values so far."""
        t = k.size(2)
        if self._k is None or self.length + t > self._k.size(2):
            capacity = max(16, 2 * (self.length + t))
            new_k = k.new_empty(*k.shape[:2], capacity, k.size(3))
            new_v = v.new_empty(*v.shape[:2], capacity, v.size(3))
            if self._k is not None:
                new_k[:, :, : self.length] = self._k[:, :, : self.length]
                new_v[:, :, : self.length] = self._v[:, :, : self.length]
            self._k, self._v, self._spare, self._owned = new_k, new_v, None, True
        self._k[:, :, self.length : self.length + t] = k
        self._v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k, self.v

    def set(self, k: Tensor, v: Tensor) -> None:
        """Store keys and values computed once (cross-attention over the encoder output)."""
        self._k, self._v, self.length = k, v, k.size(2)
        self._spare, self._owned = None, False

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search reorders hypotheses after each step)."""
        if self._k is None:
            return
        if self._k.requires_grad or self._v.requires_grad:  # out= cannot record a gradient
            self._k, self._v = self._k.index_select(0, index), self._v.index_select(0, index)
            self._spare, self._owned = None, True
            return
        rows = index.numel()  # keys and values may differ in width (d_k < d_v)
        k_shape, v_shape = (rows, *self._k.shape[1:]), (rows, *self._v.shape[1:])
        if self._spare is None or self._spare[0].shape != k_shape:
            self._spare = (self._k.new_empty(k_shape), self._v.new_empty(v_shape))
        new_k, new_v = self._spare
        used = self.length
        torch.index_select(self._k[:, :, :used], 0, index, out=new_k[:, :, :used])
        torch.index_select(self._v[:, :, :used], 0, index, out=new_v[:, :, :used])
        old = (self._k, self._v)
        self._k, self._v = new_k, new_v
        self._spare = old if self._owned else None
        self._owned = True


class DecoderCache:
    """Per-layer caches of a decoder stack; `length` is the number of positions decoded."""

    def __init__(self, n_layers: int) -> None:
        self.self_attn = [KVCache() for _ in range(n_layers)]
        self.cross_attn = [KVCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` in every layer's caches."""
        for cache in (*self.self_attn, *self.cross_attn):
            cache.reorder(index)

    def reorder_self(self, index: Tensor) -> None:
        """Reorder only self-attention: enough when `index` keeps every row within its
        source sentence's group, whose cross-attention keys and values are all equal."""
        for cache in self.self_attn:
            cache.reorder(index)
