"""The decoder state: the cache gives the logits of full recomputation at every step, through
row reorders and dropped rows, for every model variant; positions cap the output length."""

from __future__ import annotations

import pytest
import torch

from aiayn.generate.decoding import DecoderState, next_log_probs, pad_outputs
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import greedy_search
from tests.generate.models import BOS, EOS, PAD, sources, tiny_model

VARIANTS = {
    "post-norm": ("encoder-decoder", {}),
    "pre-norm": ("encoder-decoder", dict(norm_first=True)),
    "learned": ("encoder-decoder", dict(positions="learned")),
    "rope": ("encoder-decoder", dict(positions="rope")),
    "untied": ("encoder-decoder", dict(share_embeddings=False, tie_output=False)),
    "small-d_k": ("encoder-decoder", dict(d_k=4)),  # keys narrower than values (Table 3 B)
    "lm": ("decoder-only", {}),
    "lm-rope": ("decoder-only", dict(positions="rope")),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_logits_equal_recomputed_logits_at_every_step_through_reorders(variant):
    """45 steps: the self-attention caches grow past their first 16 and 32 slots, and rows
    are reordered before and after growing."""
    kind, changes = VARIANTS[variant]
    model = tiny_model(kind, max_len=64, **changes)
    src, src_valid = sources([5, 3, 8, 1], seed=7)
    if kind == "decoder-only":
        src, src_valid = src[:, :3].clamp(min=4), None
    cached = DecoderState(model, src, src_valid, use_cache=True)
    uncached = DecoderState(model, src, src_valid, use_cache=False)
    g = torch.Generator().manual_seed(0)
    tokens = cached.prefix
    for step in range(45):
        with torch.no_grad():
            a, b = cached.next_logits(tokens), uncached.next_logits(tokens)
        # fp32 rounding of two summation orders (logits up to ~7; identical in fp64); a cache
        # bug moves logits by tenths
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        tokens = torch.cat([tokens, torch.randint(4, 13, (tokens.size(0), 1), generator=g)], 1)
        if step == 3:  # rows copied and moved, as beam search does
            index = torch.tensor([1, 1, 0, 3])
            for state in (cached, uncached):
                state.select(index)
            tokens = tokens[index]
        if step == 6:  # a finished row leaves the batch
            keep = torch.tensor([0, 2, 3])
            for state in (cached, uncached):
                state.select(keep)
            tokens = tokens[keep]
        if step == 20:  # after the first growth
            index = torch.tensor([2, 0, 0])
            for state in (cached, uncached):
                state.select(index)
            tokens = tokens[index]


def test_same_source_reorder_keeps_memory_and_matches_recomputation():
    model = tiny_model()
    src, src_valid = sources([6], seed=8)
    src, src_valid = src.expand(3, -1), src_valid.expand(3, -1)  # one sentence, three beams
    cached = DecoderState(model, src, src_valid, use_cache=True)
    uncached = DecoderState(model, src, src_valid, use_cache=False)
    tokens = torch.tensor([[BOS, 4], [BOS, 5], [BOS, 6]])
    with torch.no_grad():
        cached.next_logits(tokens)
        index = torch.tensor([2, 2, 0])
        cached.select(index, same_source=True)
        uncached.select(index, same_source=True)
        tokens = torch.cat([tokens[index], torch.tensor([[7], [8], [9]])], 1)
        torch.testing.assert_close(
            cached.next_logits(tokens), uncached.next_logits(tokens), atol=1e-5, rtol=0
        )


def test_max_output_lengths_follow_a_and_b_and_stop_at_the_positions():
    model = tiny_model(max_len=10)
    src, src_valid = sources([2, 4, 9], seed=9)
    state = DecoderState(model, src, src_valid)
    assert state.max_output_lengths(1.5, 2).tolist() == [5, 8, 10]
    assert state.max_output_lengths(0.0, 0).tolist() == [1, 1, 1]
    lm = tiny_model("decoder-only", max_len=10)
    prompt = torch.full((1, 7), 5)
    assert DecoderState(lm, prompt).max_output_lengths(0.0, 50).tolist() == [50]  # slides on


def test_a_language_model_slides_its_window_past_the_positions():
    lm = tiny_model("decoder-only", max_len=8)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out = greedy_search(
        lm, prompt, options=DecodeOptions(max_len_a=0.0, max_len_b=12, min_len=12)
    )  # no EOS: all 12 tokens
    assert out.shape == (2, 12)  # 15 tokens from a model with 8 positions
    assert torch.equal(
        out,
        greedy_search(
            lm,
            prompt,
            options=DecodeOptions(max_len_a=0.0, max_len_b=12, min_len=12),
            use_cache=False,
        ),
    )
    tokens = torch.cat([prompt, out], dim=1)
    for t in range(8, tokens.size(1)):  # each token past the positions: the last 8 decide it
        logits = lm(tokens[:, t - 8 : t])[:, -1].float()
        expected = next_log_probs(logits, t - 3, min_len=12, model=lm).argmax(-1)
        assert torch.equal(tokens[:, t], expected), t


def test_next_log_probs_never_give_pad_or_bos_and_hold_eos_until_min_len():
    model = tiny_model()
    logits = torch.zeros(2, 13)
    early = next_log_probs(logits.clone(), 0, min_len=2, model=model)
    assert torch.isinf(early[:, [PAD, BOS, EOS]]).all()
    late = next_log_probs(logits.clone(), 2, min_len=2, model=model)
    assert torch.isfinite(late[:, EOS]).all() and torch.isinf(late[:, [PAD, BOS]]).all()


def test_prompts_with_padding_are_refused():
    lm = tiny_model("decoder-only")
    prompt = torch.tensor([[5, 6], [7, PAD]])
    with pytest.raises(ValueError, match="same length"):
        DecoderState(lm, prompt, prompt != PAD)


def test_pad_outputs():
    assert pad_outputs([[4, EOS], [], [5, 6, 7]], PAD, torch.device("cpu")).tolist() == [
        [4, EOS, PAD],
        [PAD, PAD, PAD],
        [5, 6, 7],
    ]
