"""Decoding: token ids in, token ids out (greedy and beam search, sampling), on the KV cache."""

from aiayn.generate.decoding import DecoderState
from aiayn.generate.sampling import filter_logits, generate, sample
from aiayn.generate.search import Hypothesis, beam_search, greedy_search, length_penalty

__all__ = [
    "DecoderState",
    "Hypothesis",
    "beam_search",
    "filter_logits",
    "generate",
    "greedy_search",
    "length_penalty",
    "sample",
]
