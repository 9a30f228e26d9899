"""Sampling: the top-k / top-p filters keep exactly the tokens they should, draws follow the
filtered distribution, a seed reproduces them, temperature 0 is greedy, for both model kinds."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.generate.options import DecodeOptions
from aiayn.generate.sampling import filter_logits, generate, sample, sample_tokens
from aiayn.generate.search import greedy_search
from tests.generate.models import EOS, ScriptedModel, sources, tiny_model

PROBS = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 1 (.5), 3 (.3), 2 (.15), 0 (.05)


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().squeeze(1).tolist()


def test_top_k_keeps_the_k_most_likely_tokens():
    assert kept(filter_logits(PROBS.log(), top_k=2)) == [1, 3]
    assert kept(filter_logits(PROBS.log(), top_k=1)) == [1]
    assert kept(filter_logits(PROBS.log(), top_k=0)) == [0, 1, 2, 3]
    assert kept(filter_logits(PROBS.log(), top_k=9)) == [0, 1, 2, 3]


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert kept(filter_logits(PROBS.log(), top_p=0.4)) == [1]
    assert kept(filter_logits(PROBS.log(), top_p=0.7)) == [1, 3]
    assert kept(filter_logits(PROBS.log(), top_p=0.9)) == [1, 2, 3]
    assert kept(filter_logits(PROBS.log(), top_p=0.01)) == [1]  # the best always stays
    assert kept(filter_logits(PROBS.log(), top_p=0.9, top_k=2)) == [1, 3]
    filtered = filter_logits(PROBS.log(), top_p=0.7)
    torch.testing.assert_close(filtered[0, [1, 3]], PROBS.log()[0, [1, 3]])


def test_draws_follow_the_filtered_distribution():
    rows = 20000
    log_probs = PROBS.log().expand(rows, -1)
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(log_probs, top_k=2, generator=g)
    share = (draws == 1).float().mean().item()
    assert set(draws.tolist()) == {1, 3}
    assert share == pytest.approx(0.5 / 0.8, abs=0.02)  # renormalised over the kept two
    hot = sample_tokens(log_probs, temperature=2.0, generator=g)
    flat = PROBS[0] ** 0.5 / (PROBS[0] ** 0.5).sum()  # softmax(log p / 2)
    assert (hot == 0).float().mean().item() == pytest.approx(float(flat[0]), abs=0.02)


def test_sampling_options_are_checked():
    with pytest.raises(ValueError, match="top_p=1.5"):
        filter_logits(PROBS, top_p=1.5)
    with pytest.raises(ValueError, match="need temperature >= 0.*got temperature=-1"):
        DecodeOptions(temperature=-1)  # checked where the options are made (test_options.py)
    with pytest.raises(ValueError, match="temperature=-1"):
        sample_tokens(PROBS.log(), temperature=-1)


@pytest.mark.parametrize("kind", ["encoder-decoder", "decoder-only"])
def test_a_seed_reproduces_samples_and_temperature_zero_is_greedy(kind):
    model = tiny_model(kind)
    src, src_valid = sources([4, 6, 2], seed=1)
    if kind == "decoder-only":
        src, src_valid = src[:, :2].clamp(min=4), None
    options = DecodeOptions(max_len_a=0.0, max_len_b=12, top_p=0.9, top_k=8, temperature=1.5)
    first = sample(model, src, src_valid, options.replace(seed=3))
    assert torch.equal(first, sample(model, src, src_valid, options.replace(seed=3)))
    assert torch.equal(
        first, sample(model, src, src_valid, options.replace(seed=3), use_cache=False)
    )
    others = [sample(model, src, src_valid, options.replace(seed=s)) for s in range(4, 8)]
    assert any(not torch.equal(first, other) for other in others)
    greedy = greedy_search(
        model, src, src_valid, options=DecodeOptions(max_len_a=0.0, max_len_b=12)
    )
    assert torch.equal(
        sample(
            model,
            src,
            src_valid,
            options=DecodeOptions(max_len_a=0.0, max_len_b=12, temperature=0.0),
        ),
        greedy,
    )


def test_sampling_stops_rows_at_eos():
    model = ScriptedModel(lambda source, prefix: {EOS: 0.5, 4: 0.5})
    out = sample(
        model,
        torch.tensor([[4, EOS]] * 64),
        options=DecodeOptions(max_len_a=0.0, max_len_b=30, seed=0),
    )
    for row in out.tolist():
        assert EOS in row and all(t == 0 for t in row[row.index(EOS) + 1 :])
    lengths = [row.index(EOS) + 1 for row in out.tolist()]
    assert sum(lengths) / len(lengths) == pytest.approx(2.0, abs=0.5)  # geometric, p = 1/2
    assert math.isclose(min(lengths), 1)


def test_generate_continues_a_prompt_with_a_language_model():
    lm = tiny_model("decoder-only", max_len=20)
    prompt = torch.tensor([5, 6, 7])
    greedy = generate(lm, prompt, options=DecodeOptions(max_new_tokens=8, temperature=0.0))
    reference = greedy_search(lm, prompt[None], options=DecodeOptions(max_len_a=0.0, max_len_b=8))[
        0
    ]
    assert torch.equal(greedy, reference) and greedy.dim() == 1
    batch = generate(lm, prompt.expand(4, -1), options=DecodeOptions(max_new_tokens=30, seed=1))
    assert batch.shape[0] == 4 and batch.shape[1] <= 30
    assert (
        generate(
            lm, torch.tensor([], dtype=torch.long), options=DecodeOptions(max_new_tokens=3)
        ).numel()
        <= 3
    )
    with pytest.raises(ValueError, match="decoder-only"):
        generate(tiny_model(), prompt)
    long_prompt = torch.randint(4, 13, (30,), generator=torch.Generator().manual_seed(0))
    # 30 tokens for 20 positions: the last 20 decide, as in nanoGPT
    from_end = generate(
        lm, long_prompt[-20:], options=DecodeOptions(max_new_tokens=6, temperature=0.0)
    )
    from_start = generate(
        lm, long_prompt[:20], options=DecodeOptions(max_new_tokens=6, temperature=0.0)
    )
    assert torch.equal(
        generate(lm, long_prompt, options=DecodeOptions(max_new_tokens=6, temperature=0.0)),
        from_end,
    )
    assert not torch.equal(from_end, from_start)
