"""Scaled dot-product attention (§3.2.1) and multi-head attention (§3.2.2).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V                                    (Eq. 1)
MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from aiayn.machine import cpu_has_native_bf16
from aiayn.model.embedding import RotaryEmbedding
from aiayn.model.kv_cache import AnyKVCache
from aiayn.model.masks import check_mask


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    need_weights: bool = True,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention, Eq. 1.

    With `need_weights=True` this computes the formula step by step and returns the attention
    weights; otherwise it takes the fused `F.scaled_dot_product_attention` path where that is
    faster (same result, less memory) and returns None for the weights. A query whose keys are
    all masked gets a zero output on both paths, never NaN.

    Args:
        q, k, v: (batch, heads, q_len, d_head), (batch, heads, k_len, d_head) twice.
        mask: boolean, True = may attend, broadcastable to (batch, heads, q_len, k_len).
        need_weights: return the (batch, heads, q_len, k_len) weights.
        dropout: dropout probability on the weights (pass 0 at inference).

    Returns:
        (output (batch, heads, q_len, d_head), weights or None)
    """
    batch, heads, q_len, d_head = q.shape
    k_len = k.size(2)
    if mask is not None:
        check_mask(mask, batch, heads, q_len, k_len)
        # Rows with no key to attend to: let them see everything, then zero their output.
        has_key = mask.any(dim=-1, keepdim=True)  # (batch|1, heads|1, q_len|1, 1)
        mask = mask | ~has_key
    if not need_weights and fused_is_faster(q, k):
        with no_cudnn_attention(q):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return (out if mask is None else out * has_key), None

    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)  # (batch, heads, q_len, k_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights * has_key
    out = F.dropout(weights, p=dropout) @ v  # (batch, heads, q_len, d_head)
    return out, (weights if need_weights else None)


def fused_is_faster(q: Tensor, k: Tensor) -> bool:
    """Whether SDPA's fused kernel beats the formula on these shapes, as measured on CPUs with
    torch 2.13 (`python -m benchmarks.attention`, and `--decode-step` for one query per row;
    docs/benchmarks.md). On GPUs it wins everywhere.

    Training (forward + backward): in fp32 it wins at every length (2.5-4x on an AVX2 CPU). In
    bf16 on a CPU with native bf16 (AVX512-BF16) it is 2-6x slower for keys shorter than 256,
    the lengths translation trains on, and faster beyond; on a CPU without native bf16, where
    the formula's bf16 products are emulated, it is ~3x faster at every length.

    A decoding step (one query per row, no gradient): the fused kernel wins for a few rows (2-3x
    at batch 1) and loses once (batch x heads) rows x keys grow past about 4,096 in fp32 (by up
    to 1.5x at 512 rows x 40 keys, on AVX-512 and AVX2 alike) or 1,280 in native bf16 (up to
    3.8x): beam search over a batch has many rows. A compiled step (`aiayn.generate.compiled`)
    takes the formula at every size, which inductor fuses: a test on the number of rows or keys
    would compile the step once for each side of it (measured the same at batch 1 both ways)."""
    if q.device.type != "cpu":
        return True
    if q.dtype != torch.float32 and not cpu_has_native_bf16():
        return True
    if q.size(2) == 1 and not (q.requires_grad or k.requires_grad):
        if torch.compiler.is_compiling():
            return False  # one path for every shape: a size test would guard and recompile
        rows_keys = q.size(0) * q.size(1) * k.size(2)
        return rows_keys < (4096 if q.dtype == torch.float32 else 1280)
    return q.dtype == torch.float32 or k.size(2) >= 256


_NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def no_cudnn_attention(q: Tensor):
    """On a GPU, SDPA's kernels other than cuDNN's: torch prefers cuDNN's for bf16 on Hopper, and
    cuDNN builds a plan for every new shape, which decoding (a new key length each step) and
    length-bucketed training (a new batch shape each step) keep asking for: measured on an H200,
    bf16 decoding ran 2-6x slower than fp32 with it (docs/benchmarks.md, GPU)."""
    return sdpa_kernel(_NOT_CUDNN) if q.is_cuda else nullcontext()


class MultiHeadAttention(nn.Module):
    """Multi-head attention (§3.2.2), for self-attention (`x_kv` is None) and for the decoder's
    attention over the encoder output ("encoder-decoder attention", §3.2.3).

    Set `keep_weights = True` to keep each call's attention weights in `self.weights` (for
    attention maps); otherwise the fused path runs and no weights are made.

    With a `KVCache`, self-attention appends this call's keys and values to it and attends over
    all positions so far (incremental decoding); cross-attention computes the keys and values of
    the memory on the first call and reuses them afterwards. A `StaticKVCache` holds a buffer of
    fixed capacity instead, which attention reads whole under the mask the decoder gives.

    Shape:
        x: (batch, q_len, d_model); x_kv: (batch, k_len, d_model) or None;
        mask: boolean, broadcastable to (batch, n_heads, q_len, k_len) -> (batch, q_len, d_model)
        and, with `need_weights`, weights (batch, n_heads, q_len, k_len).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        d_k: int | None = None,
        dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads  # d_v
        self.d_k = d_k or self.d_head
        self.dropout = dropout
        self.rotary = rotary
        self.q_proj = nn.Linear(d_model, n_heads * self.d_k)  # W^Q for all heads at once
        self.k_proj = nn.Linear(d_model, n_heads * self.d_k)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O
        self.keep_weights = False
        self.weights: Tensor | None = None

    def forward(
        self,
        x: Tensor,
        x_kv: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        cache: AnyKVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        is_self = x_kv is None
        offset = cache.length if (cache is not None and is_self) else 0
        q = self.split_heads(self.q_proj(x))  # (batch, heads, q_len, d_head)
        if not is_self and cache is not None and cache.length > 0:
            k, v = cache.k, cache.v  # memory keys/values from the first step
        else:
            source = x if is_self else x_kv
            k = self.split_heads(self.k_proj(source))  # (batch, heads, k_len, d_head)
            v = self.split_heads(self.v_proj(source))
            if self.rotary is not None and is_self:
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if cache is not None:
                if is_self:
                    k, v = cache.append(k, v)
                else:
                    cache.set(k, v)
        dropout = self.dropout if self.training else 0.0
        need_weights = need_weights or self.keep_weights
        out, weights = attention(q, k, v, mask, need_weights=need_weights, dropout=dropout)
        if self.keep_weights:
            self.weights = weights.detach()
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, -1)  # (batch, q_len, d_model)
        return self.out_proj(out), weights

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, len, heads * d) -> (batch, heads, len, d): d is d_k for queries and keys,
        d_v = d_head for values."""
        batch, length, width = x.shape
        return x.view(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2)


@contextmanager
def keeping_weights(modules: Sequence[MultiHeadAttention]) -> Iterator[None]:
    """Make `modules` keep each call's attention weights (in `.weights`) while inside, and
    forget them afterwards: the one way attention maps and the coverage penalty read them."""
    before = [m.keep_weights for m in modules]
    for module in modules:
        module.keep_weights = True
    try:
        yield
    finally:
        for module, keep in zip(modules, before, strict=True):
            module.keep_weights, module.weights = keep, None
