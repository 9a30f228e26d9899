"""Corpus-level scores: BLEU (§6.1) and chrF through sacrebleu, reported with the sacrebleu
signature that makes them comparable, and perplexity from summed negative log-likelihoods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass(frozen=True)
class CorpusScore:
    """A corpus-level score with the sacrebleu signature that reproduces it."""

    name: str
    """`BLEU` or `chrF2`."""
    score: float
    """0-100."""
    signature: str
    """sacrebleu's signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`."""
    detail: str
    """sacrebleu's full line (n-gram precisions, brevity penalty, lengths)."""

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f} ({self.signature})"


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> CorpusScore:
    """sacreBLEU of detokenised hypotheses against raw references (WMT's 13a tokenisation).

    Args:
        hypotheses: One output sentence per input.
        references: One reference per hypothesis, or several such streams (multi-reference).
        tokenize: sacrebleu tokeniser (`13a`, `intl`, `zh`, `none`, ...).
        lowercase: Case-insensitive BLEU (the signature then says `case:lc`).
    """
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    streams = _streams(hypotheses, references)
    result = metric.corpus_score(list(hypotheses), streams)
    return CorpusScore("BLEU", result.score, str(metric.get_signature()), str(result))


def chrf(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> CorpusScore:
    """chrF2 (Popović 2015, character n-gram F-score, beta 2) with sacrebleu's defaults."""
    metric = CHRF()
    result = metric.corpus_score(list(hypotheses), _streams(hypotheses, references))
    return CorpusScore("chrF2", result.score, str(metric.get_signature()), str(result))


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token); `inf` past e^700 (float64 overflows near
    e^709). The one perplexity rule: training log, validation and `aiayn evaluate`."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got n_tokens={n_tokens}")
    mean = nll_sum / n_tokens
    return math.exp(mean) if mean < 700 else math.inf


def _streams(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """References as sacrebleu wants them: a list of streams, each parallel to the hypotheses."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses is one string; pass a list of sentences")
    streams = [list(references)] if references and isinstance(references[0], str) else references
    streams = [list(stream) for stream in streams]
    if not streams:
        raise ValueError("no references given")
    for i, stream in enumerate(streams):
        if len(stream) != len(hypotheses):
            raise ValueError(
                f"reference stream {i} has {len(stream)} sentences, "
                f"hypotheses have {len(hypotheses)}"
            )
    return streams
