"""Decoding: token ids in, token ids out (greedy and beam search, sampling), on the KV cache."""

from aiayn.generate.search import greedy_search

__all__ = ["greedy_search"]
