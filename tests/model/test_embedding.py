"""Positions (§3.5) and rotary positions."""

from __future__ import annotations

import math

import torch

from aiayn.model.embedding import RotaryEmbedding, TokenEmbedding, sinusoids


def test_sinusoids_follow_the_papers_formula():
    table = sinusoids(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_embeddings_are_scaled_by_sqrt_d_model():
    emb = TokenEmbedding(10, 16, pad_id=0)
    torch.nn.init.normal_(emb.weight)
    tokens = torch.tensor([[1, 2]])
    torch.testing.assert_close(emb(tokens), emb.weight[tokens] * 4.0)


def test_rotary_scores_depend_only_on_distance():
    rope = RotaryEmbedding(64, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        return (rope(q, offset=i) * rope(k, offset=j)).sum().item()

    assert math.isclose(score(3, 1), score(10, 8), rel_tol=1e-4, abs_tol=1e-5)
    assert not math.isclose(score(3, 1), score(3, 2), rel_tol=1e-3)
    assert math.isclose(rope(q, 5).norm().item(), q.norm().item(), rel_tol=1e-5)
