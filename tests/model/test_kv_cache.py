"""The KV cache against `torch.cat`: growth past the first 16 slots one step at a time and in
chunks, reorders after growth and one after another (two buffers taking turns), cross-attention
keys set once and reused."""

from __future__ import annotations

import pytest
import torch

from aiayn.model.kv_cache import DecoderCache, KVCache


def steps(
    batch: int, lengths: list[int], seed: int = 0, d_v: int = 4
) -> list[tuple[torch.Tensor, ...]]:
    """Random (k, v) chunks of (batch, 2 heads, length, 4) and (batch, 2 heads, length, d_v)."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 2, n, 4, generator=g), torch.randn(batch, 2, n, d_v, generator=g))
        for n in lengths
    ]


def test_growth_one_step_at_a_time_keeps_every_position():
    cache, seen_k, seen_v = KVCache(), [], []
    for k, v in steps(3, [1] * 40):
        seen_k.append(k)
        seen_v.append(v)
        all_k, all_v = cache.append(k, v)
        assert torch.equal(all_k, torch.cat(seen_k, dim=2))
        assert torch.equal(all_v, torch.cat(seen_v, dim=2))
    assert len(cache) == 40 and cache._k.size(2) >= 40  # grew from 16 twice


def test_growth_in_chunks_of_any_size_keeps_every_position():
    cache = KVCache()
    chunks = steps(2, [5, 11, 1, 30, 2, 64])  # the 30 and the 64 each outgrow the storage
    for i, (k, v) in enumerate(chunks):
        all_k, all_v = cache.append(k, v)
        assert torch.equal(all_k, torch.cat([c[0] for c in chunks[: i + 1]], dim=2))
        assert torch.equal(all_v, torch.cat([c[1] for c in chunks[: i + 1]], dim=2))
    assert len(cache) == 113


def test_reorder_after_growth_then_more_growth():
    cache = KVCache()
    first, later = steps(3, [20]), steps(3, [1] * 30, seed=1)
    cache.append(*first[0])
    index = torch.tensor([2, 0, 2])  # rows copied and dropped, as beam search does
    cache.reorder(index)
    ref_k, ref_v = first[0][0][index], first[0][1][index]
    for k, v in later:  # grows past 32 slots after the reorder
        ref_k, ref_v = torch.cat([ref_k, k], dim=2), torch.cat([ref_v, v], dim=2)
        all_k, all_v = cache.append(k, v)
        assert torch.equal(all_k, ref_k) and torch.equal(all_v, ref_v)
    keep = torch.tensor([1])
    cache.reorder(keep)
    assert torch.equal(cache.k, ref_k[keep]) and torch.equal(cache.v, ref_v[keep])


def test_cross_attention_keys_are_set_once_and_reused_through_reorders():
    memory_k, memory_v = steps(2, [7])[0]
    cache = KVCache()
    cache.set(memory_k, memory_v)
    assert len(cache) == 7 and torch.equal(cache.k, memory_k) and torch.equal(cache.v, memory_v)
    assert cache.k.data_ptr() == memory_k.data_ptr()  # reused, not copied
    cache.reorder(torch.tensor([1, 1, 0]))
    assert torch.equal(cache.k, memory_k[[1, 1, 0]]) and torch.equal(cache.v, memory_v[[1, 1, 0]])


def test_decoder_cache_counts_positions_and_reorders_self_attention_alone_on_request():
    cache = DecoderCache(n_layers=2)
    assert cache.length == 0 and DecoderCache(0).length == 0
    (k, v), (mk, mv) = steps(2, [3, 5])
    for layer in range(2):
        cache.self_attn[layer].append(k, v)
        cache.cross_attn[layer].set(mk, mv)
    assert cache.length == 3
    index = torch.tensor([1, 0])
    cache.reorder_self(index)
    assert torch.equal(cache.self_attn[1].k, k[index])
    assert cache.cross_attn[1].k.data_ptr() == mk.data_ptr()  # left as it was
    cache.reorder(index)
    assert torch.equal(cache.self_attn[0].v, v) and torch.equal(cache.cross_attn[0].k, mk[index])


@pytest.mark.parametrize("d_v", [4, 6])  # keys may be narrower than values (Table 3 B)
def test_repeated_reorders_match_gathering_row_by_row(d_v):
    cache, ref_k, ref_v = KVCache(), None, None
    for step, (k, v) in enumerate(steps(4, [1] * 12, seed=2, d_v=d_v)):
        all_k, _ = cache.append(k, v)
        ref_k = k if ref_k is None else torch.cat([ref_k, k], dim=2)
        ref_v = v if ref_v is None else torch.cat([ref_v, v], dim=2)
        index = torch.tensor([(step + r) % 4 for r in (0, 0, 3, 1)])
        cache.reorder(index)
        ref_k, ref_v = ref_k[index], ref_v[index]
        assert torch.equal(cache.k, ref_k) and torch.equal(cache.v, ref_v)
        assert torch.equal(all_k[index], ref_k)  # the step's views are the pre-reorder rows


def test_reordering_a_set_cache_never_writes_into_the_given_tensors():
    memory_k, memory_v = steps(3, [5])[0]
    before_k, before_v = memory_k.clone(), memory_v.clone()
    cache = KVCache()
    cache.set(memory_k, memory_v)
    ref_k = memory_k
    for index in ([2, 0, 1], [1, 1, 2], [0, 2, 2]):
        cache.reorder(torch.tensor(index))
        ref_k = ref_k[index]
        assert torch.equal(cache.k, ref_k)
    assert torch.equal(memory_k, before_k) and torch.equal(memory_v, before_v)


def test_a_reorder_under_autograd_passes_gradients_to_the_rows_it_kept():
    k, v = (t.requires_grad_() for t in steps(3, [4])[0])
    cache = KVCache()
    cache.append(k, v)
    cache.reorder(torch.tensor([2, 2, 0]))
    (cache.k.sum() + cache.v.sum()).backward()
    kept = torch.tensor([1.0, 0.0, 2.0])[:, None, None, None].expand_as(k)  # row 2 kept twice
    assert torch.equal(k.grad, kept) and torch.equal(v.grad, kept)
