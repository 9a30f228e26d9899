"""Batches: collation conventions (EOS-terminated source, shifted target), language-model
windows, and the token-budget sampler's invariants: budget, coverage, sharding, resuming.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aiayn.data.batching import (
    Batch,
    TokenBatchSampler,
    collate,
    example_lengths,
    iterate_batches,
    lm_batch,
    window_starts,
)
from aiayn.data.corpus import multi30k_files, read_parallel
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def test_collate_follows_the_conventions():
    batch = collate([([10, 11, 12], [20]), ([13], [21, 22, 23, 24])], index=[7, 3])
    assert batch.src.tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 20, PAD_ID, PAD_ID, PAD_ID], [BOS_ID, 21, 22, 23, 24]]
    assert batch.tgt_out.tolist() == [
        [20, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
        [21, 22, 23, 24, EOS_ID],
    ]
    assert batch.src_valid.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.tgt_valid.tolist() == [[True, True, False, False, False], [True] * 5]
    assert (batch.n_src_tokens, batch.n_tgt_tokens, batch.index) == (6, 7, [7, 3])
    assert batch.src.dtype == batch.tgt_in.dtype == torch.int64
    assert batch.src_valid.dtype == torch.bool
    assert torch.equal(batch.tgt_valid.sum(), torch.tensor(batch.n_tgt_tokens))
    shifted = batch.tgt_in[:, 1:] == batch.tgt_out[:, :-1]  # the same sequence, shifted
    assert (shifted | ~batch.tgt_valid[:, 1:]).all() and (batch.tgt_in != EOS_ID).all()
    assert (batch.tgt_out[~batch.tgt_valid] == PAD_ID).all()


def test_batch_moves_to_a_device():
    moved = collate([([4], [5])]).to("meta")
    assert moved.src.device.type == moved.tgt_valid.device.type == "meta"
    assert moved.index == [0]
    lm = lm_batch(torch.arange(10), [0], 4).to("meta")
    assert lm.src is None and lm.tgt_in.device.type == "meta"


def test_language_model_windows_shift_by_one():
    tokens = torch.arange(100, 123)
    starts = window_starts(len(tokens), 5)
    assert starts == [0, 5, 10, 15]  # 20 + 5 + 1 > 23 tokens
    batch = lm_batch(tokens, [starts[2], starts[0]], 5)
    assert isinstance(batch, Batch) and batch.src is None and batch.index == [10, 0]
    assert batch.tgt_in.tolist() == [list(range(110, 115)), list(range(100, 105))]
    assert batch.tgt_out.tolist() == [list(range(111, 116)), list(range(101, 106))]
    assert batch.tgt_valid.all() and batch.n_tgt_tokens == 10
    with pytest.raises(ValueError, match="no window"):
        window_starts(5, 5)


def padded_tokens(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


def epoch(sampler: TokenBatchSampler) -> list[list[int]]:
    return list(sampler)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=120),
    max_tokens=st.integers(40, 200),
    world_size=st.integers(1, 4),
    seed=st.integers(0, 3),
    bucket_size=st.sampled_from([None, 7, 50]),
)
def test_sampler_budget_coverage_and_sharding(lengths, max_tokens, world_size, seed, bucket_size):
    if len(lengths) < world_size:
        lengths = lengths * world_size
    options = {"seed": seed, "world_size": world_size, "bucket_size": bucket_size}
    ranks = [TokenBatchSampler(lengths, max_tokens, rank=r, **options) for r in range(world_size)]
    for number in range(3):  # each epoch must hold on its own
        try:
            expected = [len(sampler) for sampler in ranks]
        except ValueError as error:  # the one case the policy cannot serve: nothing to split
            assert "cannot give" in str(error)
            single = TokenBatchSampler(lengths, max_tokens, **{**options, "world_size": 1})
            single.set_epoch(number)
            batches = epoch(single)
            assert -(-len(batches) // world_size) * world_size > len(lengths)
            return
        shards = [epoch(sampler) for sampler in ranks]
        assert [len(shard) for shard in shards] == expected
        assert len({len(shard) for shard in shards}) == 1, "ranks must get equal batch counts"
        seen = sorted(i for shard in shards for batch in shard for i in batch)
        assert seen == list(range(len(lengths))), "each example once, on exactly one rank"
        for batch in itertools.chain(*shards):
            assert batch and padded_tokens(batch, lengths) <= max_tokens


def reference_batches(lengths, max_tokens, *, seed, epoch, bucket_size, shuffle=True):
    """The sampler's epoch as plain Python: shuffle, sort each bucket, fill batches greedily
    (an example joins while (batch size + 1) x its length fits), shuffle the batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist() if shuffle else list(range(len(lengths)))
    bucket, batches = bucket_size or len(lengths), []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])  # stable
        current: list[int] = []
        for i in chunk:
            if current and (len(current) + 1) * lengths[i] > max_tokens:
                batches.append(current)
                current = []
            current.append(i)
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=300),
    max_tokens=st.integers(60, 500),
    seed=st.integers(0, 3),
    bucket_size=st.sampled_from([None, 1, 7, 50]),
    shuffle=st.booleans(),
)
def test_the_vectorised_packing_is_the_greedy_loop(lengths, max_tokens, seed, bucket_size, shuffle):
    sampler = TokenBatchSampler(lengths, max_tokens, seed=seed, bucket_size=bucket_size,
                                shuffle=shuffle)  # fmt: skip
    for number in range(2):
        sampler.set_epoch(number)
        expected = reference_batches(lengths, max_tokens, seed=seed, epoch=number,
                                     bucket_size=bucket_size, shuffle=shuffle)  # fmt: skip
        assert epoch(sampler) == expected


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=2, max_size=80),
    stop=st.integers(0, 30),
    world_size=st.integers(1, 3),
)
def test_resuming_mid_epoch_gives_the_rest_of_the_epoch(lengths, stop, world_size):
    lengths = lengths * world_size

    def make() -> TokenBatchSampler:
        return TokenBatchSampler(lengths, 60, seed=5, rank=world_size - 1, world_size=world_size)

    reference = make()
    reference.set_epoch(3)
    epoch3, epoch4 = epoch(reference), epoch(reference)
    interrupted = make()
    interrupted.set_epoch(3)
    stop = min(stop, len(epoch3))
    seen = list(itertools.islice(iter(interrupted), stop))
    state = interrupted.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # as a training loop would; it must not rewind
    assert seen + epoch(resumed) == (epoch3 if stop < len(epoch3) else epoch3 + epoch4)


def test_epochs_reshuffle_and_seeds_repeat():
    lengths = [3 + i % 17 for i in range(500)]
    sampler = TokenBatchSampler(lengths, 100, seed=1)
    first, second = epoch(sampler), epoch(sampler)
    assert sampler.epoch == 2 and first != second
    again = TokenBatchSampler(lengths, 100, seed=1)
    assert epoch(again) == first
    assert epoch(TokenBatchSampler(lengths, 100, seed=2)) != first
    fixed = TokenBatchSampler(lengths, 100, shuffle=False)
    assert epoch(fixed) == epoch(fixed)


def test_state_dict_refuses_another_configuration():
    sampler = TokenBatchSampler([5] * 10, 20, seed=1)
    with pytest.raises(ValueError, match="sampler state was saved with"):
        TokenBatchSampler([5] * 10, 20, seed=2).load_state_dict(sampler.state_dict())


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="example 1 has 50 tokens, more than max_tokens 40"):
        TokenBatchSampler([3, 50, 4], 40)
    with pytest.raises(ValueError, match="example 2 has length 0, below 1"):
        TokenBatchSampler([3, 4, 0], 40)
    with pytest.raises(ValueError, match="rank must be in"):
        TokenBatchSampler([3, 4], 40, rank=2, world_size=2)
    with pytest.raises(ValueError, match="need at least 3 examples"):
        TokenBatchSampler([3, 4], 40, world_size=3)


def test_real_batches_are_tight(data_dir):
    """Over Multi30k train (whitespace tokens), sorted buckets keep padding under 10%."""
    pairs = read_parallel(*(multi30k_files("train", lang, data_dir) for lang in ("de", "en")))
    pairs_ids = [([4] * len(s.split()), [5] * len(t.split())) for s, t in pairs]
    lengths = example_lengths(pairs_ids)
    sampler = TokenBatchSampler(lengths, 4096, seed=0)
    batches = list(iterate_batches(pairs_ids, sampler))
    assert sorted(i for batch in batches for i in batch.index) == list(range(len(pairs)))
    slots = sum(batch.src.numel() + batch.tgt_in.numel() for batch in batches)
    assert all(batch.src.numel() <= 4096 and batch.tgt_in.numel() <= 4096 for batch in batches)
    real = sum(batch.n_src_tokens + batch.n_tgt_tokens for batch in batches)
    assert real / slots > 0.9
