"""The training-levers benchmark: its anchor is the same loss as aiayn's, its table a ratio."""

from __future__ import annotations

import torch

from aiayn.train.loss import label_smoothed_cross_entropy
from benchmarks.engines import PAD
from benchmarks.training_levers import autograd_loss, table


def test_the_anchor_loss_and_its_gradient_equal_aiayns():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 50, generator=g)
    target = torch.randint(1, 50, (4, 6), generator=g)
    target[1, 2:] = PAD
    anchor, ours = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    expected = autograd_loss(anchor, target)
    expected.backward()
    got = label_smoothed_cross_entropy(ours, target, epsilon=0.1, ignore_index=PAD).loss
    got.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(ours.grad, anchor.grad)


def test_the_table_compares_each_variant_with_the_first():
    rows = [
        {"variant": "anchor", "best_s_per_step": 2.0, "median_s_per_step": 2.1,
         "tgt_tokens_per_s": 1900.0},
        {"variant": "faster", "best_s_per_step": 1.6, "median_s_per_step": 1.7,
         "tgt_tokens_per_s": 2375.0},
    ]  # fmt: skip
    text = table(rows)
    assert "| anchor | 2.000 (2.100) | 1,900 | 1.00x |" in text
    assert "| faster | 1.600 (1.700) | 2,375 | 1.25x |" in text
