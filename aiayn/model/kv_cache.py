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


class StaticKVCache:
    """Keys and values of one self-attention layer in buffers of fixed capacity, (batch, heads,
    capacity, d_head), written in place at position `length`, a (1,) tensor.

    Every step then has the same shapes and no Python number changes between steps: what a
    compiled decoder step needs (`aiayn.generate.compiled`). Attention reads the whole buffer;
    the decoder masks the positions not yet written (`StaticDecoderCache.visible`).
    """

    def __init__(self, k: Tensor, v: Tensor, length: Tensor) -> None:
        self.k, self.v, self.length = k, v, length

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write `t` new positions (batch, heads, t, d_head); return the whole buffers."""
        index = self.length + torch.arange(k.size(2), device=k.device)  # (t,)
        self.k.index_copy_(2, index, k)
        self.v.index_copy_(2, index, v)
        self.length = self.length + k.size(2)  # a new tensor: the old one may be read still
        return self.k, self.v

    def reorder(self, index: Tensor, positions: int) -> None:
        """Keep rows `index`, copying only the first `positions` positions (the ones written;
        the rest is masked): in place while the number of rows stays, so the buffers stay the
        compiled step's inputs; zeros beyond `positions` otherwise (masked weights are zero,
        and zero times a stale NaN would not be)."""
        if index.numel() == self.k.size(0):
            self.k[:, :, :positions] = self.k[index, :, :positions]
            self.v[:, :, :positions] = self.v[index, :, :positions]
            return
        k = self.k.new_zeros(index.numel(), *self.k.shape[1:])
        v = self.v.new_zeros(index.numel(), *self.v.shape[1:])
        k[:, :, :positions] = self.k[index, :, :positions]
        v[:, :, :positions] = self.v[index, :, :positions]
        self.k, self.v = k, v


class MemoryKVCache:
    """Cross-attention keys and values of the encoder output, set once: `length` is the
    tensor's size (a symbolic size in a compiled step, so a new source length does not
    recompile it)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def set(self, k: Tensor, v: Tensor) -> None:
        # Contiguous, as `reorder` leaves them: one layout, so one compiled step.
        self.k, self.v = k.contiguous(), v.contiguous()

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class StaticDecoderCache:
    """A `DecoderCache` of fixed shapes: per layer a `StaticKVCache` of `capacity` positions
    for self-attention and a `MemoryKVCache` for cross-attention."""

    def __init__(
        self,
        n_layers: int,
        batch: int,
        heads: int,
        capacity: int,
        d_k: int,
        d_v: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        start = torch.zeros(1, dtype=torch.long, device=device)
        self.self_attn = [
            StaticKVCache(
                torch.zeros(batch, heads, capacity, d_k, dtype=dtype, device=device),
                torch.zeros(batch, heads, capacity, d_v, dtype=dtype, device=device),
                start,
            )
            for _ in range(n_layers)
        ]
        self.cross_attn = [MemoryKVCache() for _ in range(n_layers)]
        self.capacity = capacity

    @property
    def length(self) -> Tensor:
        """Positions decoded, a (1,) tensor."""
        return self.self_attn[0].length

    def visible(self, q_len: int) -> Tensor:
        """Which buffer positions each of `q_len` new positions may attend to: those written
        before it and itself (the causal mask of §3.2.3). Shape (1, 1, q_len, capacity)."""
        device = self.length.device
        query = self.length + torch.arange(q_len, device=device)  # (q_len,) absolute positions
        keys = torch.arange(self.capacity, device=device)  # (capacity,)
        return (keys[None, :] <= query[:, None])[None, None]

    def reorder(self, index: Tensor, positions: int) -> None:
        """Keep rows `index` of every cache; `positions`: how many the decoder has written."""
        self.reorder_self(index, positions)
        for cache in self.cross_attn:
            cache.reorder(index)

    def reorder_self(self, index: Tensor, positions: int) -> None:
        for cache in self.self_attn:
            cache.reorder(index, positions)


AnyKVCache = KVCache | StaticKVCache | MemoryKVCache
"""What an attention layer reads and writes: `length`, `k`, `v`, `append` (self-attention) or
`set` (cross-attention)."""
