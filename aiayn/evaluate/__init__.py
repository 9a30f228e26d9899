"""Evaluation: corpus BLEU and chrF through sacrebleu (metrics.py), perplexity (metrics.py from
summed log-likelihoods, perplexity.py with sliding windows), attention maps and training curves.
"""

from aiayn.evaluate.metrics import CorpusScore, bleu, chrf

__all__ = ["CorpusScore", "bleu", "chrf"]
