"""Greedy and beam search: scripted distributions with exact tokens and scores, the exhaustive
optimum, beam 1 against greedy, cache and batch invariance, EOS and length limits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from aiayn.generate.decoding import keeping_cross_attention
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import beam_search, coverage_penalty, greedy_search, length_penalty
from tests.generate.models import EOS, PAD, UNK, ScriptedModel, sources, tiny_model

W1, W2 = 4, 5  # the scripted vocabulary's two words


def lp(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def table(entries: dict[tuple[int, ...], dict[int, float]]):
    """A script that ignores the source and looks the output so far up in `entries`."""
    return lambda source, prefix: entries.get(prefix, {EOS: 1.0})


# --- scripted distributions ------------------------------------------------------------------

SCRIPT = {
    (): {W1: 0.5, W2: 0.3, EOS: 0.2},
    (W1,): {EOS: 0.6, W1: 0.3, W2: 0.1},
    (W2,): {EOS: 0.9, W1: 0.1},
    (W1, W1): {EOS: 0.9, W1: 0.1},
    (W1, W2): {EOS: 1.0},
}


def test_scripted_beam_gives_exact_tokens_scores_and_stops_when_nothing_can_improve():
    model = ScriptedModel(table(SCRIPT))
    src = torch.tensor([[W1, EOS]])
    [hyps] = beam_search(
        model, src, options=DecodeOptions(beam=2, alpha=0.6, max_len_a=0, max_len_b=10, n_best=2)
    )
    # Step 1 keeps W1 (.5) and W2 (.3); EOS (.2) ranks third, outside the beam. Step 2 finishes
    # W1 EOS (.3) and W2 EOS (.27). Step 3 finishes W1 W1 EOS (.135) and W1 W2 EOS (.05); the
    # one live hypothesis, W1 W1 W1 (.015), cannot reach the second best: log .015 / lp(10)
    # < log .27 / lp(2), so the search stops after three decoder calls.
    assert [h.tokens for h in hyps] == [[W1, EOS], [W2, EOS]]
    assert hyps[0].score == pytest.approx(math.log(0.3) / lp(2, 0.6), abs=1e-6)
    assert hyps[1].score == pytest.approx(math.log(0.27) / lp(2, 0.6), abs=1e-6)
    assert hyps[0].token_log_probs == pytest.approx([math.log(0.5), math.log(0.6)], abs=1e-6)
    assert hyps[1].log_prob == pytest.approx(math.log(0.27), abs=1e-6)
    assert all(h.finished for h in hyps)
    assert model.calls == 3


def test_search_goes_on_while_a_longer_hypothesis_can_still_win_under_the_length_penalty():
    # EOS first (.55) beats W1 (.45) by log P, but W1 W1 W1 EOS (.45) wins once divided by
    # lp(4) with alpha 1: log .45 / 1.5 = -.53 > log .55 = -.60. Stopping at the first EOS
    # (as "n finished hypotheses" rules do with beam 1) would return the worse one.
    script = table({(): {EOS: 0.55, W1: 0.45}, (W1,): {W1: 1.0}, (W1, W1): {W1: 1.0}})
    src = torch.tensor([[W1, EOS]])
    [[best]] = beam_search(
        ScriptedModel(script), src, options=DecodeOptions(beam=1, alpha=1.0, max_len_b=10)
    )
    assert best.tokens == [W1, W1, W1, EOS]
    assert best.score == pytest.approx(math.log(0.45) / lp(4, 1.0), abs=1e-6)
    [[best]] = beam_search(
        ScriptedModel(script), src, options=DecodeOptions(beam=1, alpha=0.0, max_len_b=10)
    )
    assert best.tokens == [EOS]
    assert greedy_search(
        ScriptedModel(script), src, options=DecodeOptions(max_len_a=0.0, max_len_b=10)
    ).tolist() == [[EOS]]


def test_min_len_forbids_early_eos_and_max_len_cuts_unfinished_hypotheses():
    model = ScriptedModel(table({(): {EOS: 0.9, W1: 0.1}, (W1,): {EOS: 0.8, W1: 0.2}}))
    src = torch.tensor([[W1, EOS]])
    [[best]] = beam_search(
        model, src, options=DecodeOptions(beam=2, alpha=0.0, min_len=1, max_len_b=10)
    )
    assert best.tokens == [W1, EOS]
    assert greedy_search(
        model, src, options=DecodeOptions(max_len_a=0.0, max_len_b=10, min_len=1)
    ).tolist() == [[W1, EOS]]
    looping = ScriptedModel(table({(): {W1: 1.0}, **{(W1,) * n: {W1: 1.0} for n in range(1, 9)}}))
    [[cut]] = beam_search(looping, src, options=DecodeOptions(beam=2, max_len_a=0, max_len_b=3))
    assert cut.tokens == [W1, W1, W1] and not cut.finished and cut.score == 0.0
    assert greedy_search(
        looping, src, options=DecodeOptions(max_len_a=0.0, max_len_b=3)
    ).tolist() == [[W1, W1, W1]]


def test_max_len_is_a_times_source_length_plus_b_per_sentence():
    looping = ScriptedModel(lambda source, prefix: {W1: 1.0})
    src, src_valid = sources([2, 5])
    hyps = beam_search(
        looping, src, src_valid, options=DecodeOptions(beam=2, max_len_a=1.5, max_len_b=1)
    )
    assert [len(h[0].tokens) for h in hyps] == [4, 8]  # floor(1.5 * 2 + 1), floor(1.5 * 5 + 1)


# --- real (tiny, random) models ---------------------------------------------------------------


def all_outputs(max_len: int, words: list[int], min_len: int):
    """Every output the search can produce: words then EOS, or max_len words without it."""
    for n in range(min_len, max_len):
        for words_ in itertools.product(words, repeat=n):
            yield [*words_, EOS]
    yield from (list(w) for w in itertools.product(words, repeat=max_len))


@torch.no_grad()
def log_prob_of(model, src: torch.Tensor, output: list[int]) -> float:
    """log P(output | src) by teacher forcing (no cache), EOS barred before min_len aside."""
    tgt_in = torch.tensor([[model.config.bos_id, *output[:-1]]])
    log_probs = model(src, tgt_in).log_softmax(-1)[0]
    return float(log_probs[torch.arange(len(output)), torch.tensor(output)].sum())


@pytest.mark.parametrize(("alpha", "min_len"), [(0.0, 0), (0.6, 0), (2.0, 1)])
def test_a_beam_holding_every_prefix_finds_the_exhaustive_optimum_and_n_best(alpha, min_len):
    model = tiny_model(vocab_size=6, seed=1)
    src = torch.tensor([[4, 5, 5, EOS]])
    max_len, words = 4, [UNK, W1, W2]  # pad and BOS are never produced
    exhaustive = sorted(
        (
            (log_prob_of(model, src, out) / lp(len(out), alpha), out)
            for out in all_outputs(max_len, words, min_len)
        ),
        key=lambda pair: -pair[0],
    )
    options = DecodeOptions(
        beam=128, alpha=alpha, max_len_a=0, max_len_b=max_len, min_len=min_len, n_best=5
    )
    [hyps] = beam_search(model, src, options=options)
    assert [h.tokens for h in hyps] == [out for _, out in exhaustive[:5]]
    assert [h.score for h in hyps] == pytest.approx([s for s, _ in exhaustive[:5]], abs=1e-5)


@pytest.mark.parametrize("kind", ["encoder-decoder", "decoder-only"])
def test_beam_one_without_length_penalty_equals_greedy(kind):
    model = tiny_model(kind)
    src, src_valid = sources([3, 6, 1, 9], seed=2)
    if kind == "decoder-only":
        src, src_valid = src[:, :3].clamp(min=4), None  # a batch of 3-token prompts
    greedy = greedy_search(
        model, src, src_valid, options=DecodeOptions(max_len_a=0.0, max_len_b=12)
    )
    beams = beam_search(
        model, src, src_valid, options=DecodeOptions(beam=1, alpha=0.0, max_len_a=0, max_len_b=12)
    )
    for row, [hyp] in enumerate(beams):
        assert greedy[row, : len(hyp.tokens)].tolist() == hyp.tokens
        assert (greedy[row, len(hyp.tokens) :] == PAD).all()


@pytest.mark.parametrize(
    "kind", ["encoder-decoder", "pre-norm", "rope", "decoder-only", "decoder-only-rope"]
)
def test_cached_and_uncached_search_give_identical_outputs(kind):
    changes = {"pre-norm": dict(norm_first=True), "rope": dict(positions="rope")}.get(kind, {})
    if kind == "decoder-only-rope":
        changes = dict(positions="rope")
    model = tiny_model(kind.removesuffix("-rope") if "decoder" in kind else "encoder-decoder",
                       **changes)  # fmt: skip
    src, src_valid = sources([4, 7, 2], seed=3)
    if model.config.kind == "decoder-only":
        src, src_valid = src[:, :2].clamp(min=4), None
    options = DecodeOptions(beam=3, alpha=0.6, max_len_a=1.0, max_len_b=5, n_best=3)
    cached = beam_search(model, src, src_valid, options, use_cache=True)
    uncached = beam_search(model, src, src_valid, options, use_cache=False)
    for with_cache, without in zip(cached, uncached, strict=True):
        assert [h.tokens for h in with_cache] == [h.tokens for h in without]
        for a, b in zip(with_cache, without, strict=True):
            assert a.token_log_probs == pytest.approx(b.token_log_probs, abs=1e-5)
    greedy = [
        greedy_search(
            model, src, src_valid, options=DecodeOptions(max_len_a=0.0, max_len_b=9), use_cache=c
        )
        for c in (True, False)
    ]
    assert torch.equal(*greedy)


def test_a_sentence_gives_the_same_output_alone_and_inside_any_batch():
    model = tiny_model()
    lengths = [5, 1, 9, 3, 7]  # a length-1 source is an empty line: EOS alone
    src, src_valid = sources(lengths, seed=4)
    options = DecodeOptions(beam=3, alpha=0.6, max_len_a=1.2, max_len_b=4, n_best=2)
    alone_beam, alone_greedy = [], []
    for row, n in enumerate(lengths):
        one = src[row : row + 1, :n]
        alone_beam.append(beam_search(model, one, options=options)[0])
        alone_greedy.append(
            greedy_search(model, one, options=DecodeOptions(max_len_a=0.0, max_len_b=12))[0]
        )
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [2, 1], [3, 3, 0]):
        batch, batch_valid = src[order], src_valid[order]
        beams = beam_search(model, batch, batch_valid, options)
        greedy = greedy_search(
            model, batch, batch_valid, options=DecodeOptions(max_len_a=0.0, max_len_b=12)
        )
        for i, row in enumerate(order):
            assert [h.tokens for h in beams[i]] == [h.tokens for h in alone_beam[row]]
            scores = [h.score for h in alone_beam[row]]
            assert [h.score for h in beams[i]] == pytest.approx(scores, abs=1e-5)
            n = len(alone_greedy[row])
            assert torch.equal(greedy[i, :n], alone_greedy[row])
            assert (greedy[i, n:] == PAD).all()


def test_outputs_end_at_eos_and_within_the_models_positions():
    model = tiny_model(max_len=6)
    src, src_valid = sources([3, 5], seed=5)
    for hyps in beam_search(
        model, src, src_valid, options=DecodeOptions(beam=4, max_len_b=50, n_best=4)
    ):
        for hyp in hyps:
            assert len(hyp.tokens) <= 6 and EOS not in hyp.tokens[:-1]
            assert hyp.finished == (hyp.tokens[-1] == EOS)
            assert hyp.log_prob == pytest.approx(sum(hyp.token_log_probs), abs=1e-5)
    out = greedy_search(model, src, src_valid, options=DecodeOptions(max_len_a=0.0, max_len_b=50))
    assert out.size(1) <= 6
    for row in out.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])


def test_coverage_penalty_scores_match_teacher_forced_attention():
    model = tiny_model(seed=2)
    src, src_valid = sources([6, 4], seed=6)
    options = DecodeOptions(beam=3, alpha=0.6, coverage=0.4, max_len_a=1.0, max_len_b=3, n_best=2)
    cached = beam_search(model, src, src_valid, options)
    uncached = beam_search(model, src, src_valid, options, use_cache=False)
    assert [[h.tokens for h in hyps] for hyps in cached] == [
        [h.tokens for h in hyps] for hyps in uncached
    ]
    layer = model.decoder.layers[-1].cross_attn
    for row, hyps in enumerate(cached):
        for hyp in hyps:
            tgt_in = torch.tensor([[model.config.bos_id, *hyp.tokens[:-1]]])
            with keeping_cross_attention(model):
                model(src[row : row + 1], tgt_in, src_valid[row : row + 1])
                attention = layer.weights.mean(dim=1)[0]  # (out_len, src_len)
            cp = coverage_penalty(attention.sum(0, keepdim=True), src_valid[row : row + 1], 0.4)
            expected = hyp.log_prob / length_penalty(len(hyp.tokens), 0.6) + float(cp[0])
            assert hyp.score == pytest.approx(expected, abs=1e-5)
    assert layer.keep_weights is False and layer.weights is None


def test_coverage_penalty_is_log_of_capped_coverage_over_real_source_tokens():
    coverage = torch.tensor([[0.5, 2.0, 0.25, 0.0]])
    valid = torch.tensor([[True, True, True, False]])
    expected = 0.2 * (math.log(0.5) + 0.0 + math.log(0.25))
    assert float(coverage_penalty(coverage, valid, 0.2)[0]) == pytest.approx(expected)


def test_bad_options_are_refused_with_their_values():
    model = tiny_model()
    src, _ = sources([3])
    with pytest.raises(ValueError, match=r"n_best \(5\) cannot exceed beam \(4\)"):
        beam_search(model, src, options=DecodeOptions(beam=4, n_best=5))
    with pytest.raises(ValueError, match="coverage"):
        beam_search(tiny_model("decoder-only"), src, options=DecodeOptions(coverage=0.2))
