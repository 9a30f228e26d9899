"""Corpus metrics: sacrebleu's numbers and signatures, argument checks, perplexity."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from aiayn.evaluate.metrics import bleu, chrf, perplexity

HYPS = ["The cat sat on the mat.", "A dog runs in the garden."]
REFS = ["The cat sat on a mat.", "A dog is running in the garden."]


def test_bleu_is_sacrebleu_with_its_signature():
    score = bleu(HYPS, REFS)
    assert score.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert score.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert str(score).startswith(f"BLEU = {score.score:.2f} (nrefs:1")
    assert bleu(REFS, REFS).score == pytest.approx(100.0)
    assert "case:lc" in bleu(HYPS, REFS, lowercase=True).signature


def test_several_reference_streams():
    one = bleu(HYPS, REFS).score
    two = bleu(HYPS, [REFS, HYPS])
    assert two.score == pytest.approx(100.0) and one < 100 and "nrefs:2" in two.signature


def test_chrf_is_sacrebleu_chrf():
    score = chrf(HYPS, REFS)
    assert score.score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert score.name == "chrF2" and "nc:6" in score.signature


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError, match="1 sentences, hypotheses have 2"):
        bleu(HYPS, REFS[:1])
    with pytest.raises(TypeError, match="one string"):
        chrf("The cat", ["The cat"])


def test_perplexity():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(7), 10) == pytest.approx(7.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(1.0, 0)
