"""The compiled decoder step: the same search results as the eager cache, four graphs in all
(first and later steps, one row and more), each model's graphs its own, eager where a row would
outgrow the static cache, and refusals that name what is wrong."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from aiayn.generate.compiled import CompiledStep
from aiayn.generate.decoding import DecoderState
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import beam_search, greedy_search
from aiayn.model.transformer import self_attention_mask
from tests.generate.models import sources, tiny_model


def graphs_compiled() -> int:
    return counters["stats"]["unique_graphs"]


def assert_same_search(model, compiled, src, src_valid, options: DecodeOptions) -> None:
    eager = beam_search(model, src, src_valid, options)
    fast = beam_search(model, src, src_valid, options, compiled=compiled)
    for with_eager, with_compiled in zip(eager, fast, strict=True):
        assert [h.tokens for h in with_compiled] == [h.tokens for h in with_eager]
        for a, b in zip(with_compiled, with_eager, strict=True):
            assert a.token_log_probs == pytest.approx(b.token_log_probs, abs=1e-5)
    greedy = DecodeOptions(max_len_a=options.max_len_a, max_len_b=options.max_len_b)
    assert torch.equal(
        greedy_search(model, src, src_valid, greedy, compiled=compiled),
        greedy_search(model, src, src_valid, greedy),
    )


@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_compiled_steps_search_as_the_eager_cache_with_four_graphs_in_all(positions):
    model = tiny_model(positions=positions)
    torch._dynamo.reset()
    before = graphs_compiled()
    compiled = CompiledStep(model, capacity=24, autotune=False)
    options = DecodeOptions(beam=3, alpha=0.6, max_len_a=1.0, max_len_b=5, n_best=2)
    # padded batches of several widths, one sentence alone, and a batch without padding
    for lengths, seed in (([4, 7, 2], 3), ([9, 1, 5, 3], 4), ([6], 5), ([3, 3], 6)):
        src, src_valid = sources(lengths, seed=seed)
        assert_same_search(model, compiled, src, src_valid, options)
    # the first step and the later ones, each for one row (greedy at batch 1) and for more
    assert graphs_compiled() - before == 4


def test_two_models_of_the_same_shapes_each_decode_with_their_own_weights():
    models = [tiny_model(seed=seed) for seed in (0, 1)]
    steps = [CompiledStep(model, capacity=16, autotune=False) for model in models]
    src, src_valid = sources([5], seed=9)
    options = DecodeOptions(max_len_a=0.0, max_len_b=10)
    eager = [greedy_search(model, src, src_valid, options) for model in models]
    assert not torch.equal(*eager)  # the two models tell each other apart
    for _ in range(2):  # interleaved, after both have compiled
        for model, step, expected in zip(models, steps, eager, strict=True):
            assert torch.equal(
                greedy_search(model, src, src_valid, options, compiled=step), expected
            )


def test_a_language_models_compiled_steps_continue_prompts_as_the_eager_cache():
    model = tiny_model("decoder-only")
    compiled = CompiledStep(model, capacity=20, autotune=False)
    src, _ = sources([4, 4, 4], seed=7)
    prompts = src[:, :3].clamp(min=4)
    options = DecodeOptions(beam=2, alpha=0.0, max_len_a=0.0, max_len_b=8)
    assert_same_search(model, compiled, prompts, None, options)
    assert_same_search(model, compiled, prompts[:1], None, options)


def test_rows_that_could_outgrow_the_static_cache_decode_eagerly_with_the_same_tokens():
    model = tiny_model()
    compiled = CompiledStep(model, capacity=8, autotune=False)
    src, src_valid = sources([5, 3], seed=8)
    short, long = DecodeOptions(max_len_a=0.0, max_len_b=8), DecodeOptions(max_len_a=0, max_len_b=9)
    for options, fits in ((short, True), (long, False)):  # BOS + 8 outputs, the last not fed
        state = DecoderState(model, src, src_valid)
        max_lens = state.max_output_lengths(0.0, options.max_len_b)
        assert state.run_compiled(compiled, max_lens) is fits
        assert torch.equal(
            greedy_search(model, src, src_valid, options, compiled=compiled),
            greedy_search(model, src, src_valid, options),
        )


def test_compiled_steps_refuse_what_they_cannot_run():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"eval mode"):
        CompiledStep(model.train())
    model.eval()
    with pytest.raises(ValueError, match=r"capacity 41 exceeds the model's max_len \(40\)"):
        CompiledStep(model, capacity=41)
    with pytest.raises(ValueError, match=r"fp32 or bf16 weights, not torch.float16"):
        CompiledStep(tiny_model().half())
    src, src_valid = sources([3], seed=1)
    state = DecoderState(tiny_model(seed=1), src, src_valid)
    with pytest.raises(ValueError, match="built for another model"):
        state.run_compiled(CompiledStep(model, autotune=False), torch.tensor([4]))
    state = DecoderState(model, src, src_valid, use_cache=False)
    with pytest.raises(ValueError, match="needs the cache"):
        state.run_compiled(CompiledStep(model, autotune=False), torch.tensor([4]))


def test_a_static_cache_masks_the_positions_not_yet_written():
    model = tiny_model()
    cache = CompiledStep(model, capacity=6, autotune=False).new_cache(2)
    tokens = torch.tensor([[2, 5, 6], [2, 7, 8]])
    mask = self_attention_mask(tokens, None, cache)  # three new positions on an empty cache
    expected = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]).bool()
    assert torch.equal(mask.squeeze(0).squeeze(0), expected)
    with pytest.raises(ValueError, match="valid"):
        self_attention_mask(tokens, tokens != 0, cache)
