"""Masks (True = may attend): padding, causal with and without a cache offset, combined, and the
checks that state the convention."""

from __future__ import annotations

import pytest
import torch

from aiayn.model.masks import causal_mask, check_mask, decoder_mask, padding_mask


def test_padding_mask_broadcasts_real_keys_over_heads_and_queries():
    valid = torch.tensor([[True, True, False], [True, False, False]])
    mask = padding_mask(valid)
    assert mask.shape == (2, 1, 1, 3) and torch.equal(mask[:, 0, 0], valid)
    with pytest.raises(ValueError, match=r"shape \(batch, len\), True on real tokens; got dtype"):
        padding_mask(valid.long())


def test_causal_mask_lets_each_query_see_itself_and_the_past():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3)[0, 0], expected)
    # two new queries after three cached positions sit at positions 3 and 4 of 5 keys
    cached = causal_mask(2, 5)[0, 0]
    assert torch.equal(cached, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert torch.equal(causal_mask(4, 4), causal_mask(4))
    with pytest.raises(ValueError, match="k_len >= q_len"):
        causal_mask(3, 2)


def test_decoder_mask_is_causal_and_padding_at_once():
    valid = torch.tensor([[True, True, False]])
    mask = decoder_mask(3, 3, valid, torch.device("cpu"))
    assert mask.shape == (1, 1, 3, 3)
    assert torch.equal(mask[0, 0], causal_mask(3)[0, 0] & valid[0])
    assert torch.equal(decoder_mask(3, 3, None, torch.device("cpu")), causal_mask(3))


@pytest.mark.parametrize("shape", [(2, 1, 1, 5), (1, 1, 4, 5), (2, 3, 4, 5), (1, 3, 1, 1)])
def test_broadcastable_boolean_masks_pass_the_check(shape):
    check_mask(torch.ones(shape, dtype=torch.bool), batch=2, heads=3, q_len=4, k_len=5)


@pytest.mark.parametrize(
    "mask",
    [
        torch.ones(2, 1, 1, 5),
        torch.ones(2, 5, dtype=torch.bool),
        torch.ones(2, 3, 4, 6, dtype=torch.bool),
    ],
)
def test_other_masks_are_refused_with_the_convention(mask):
    with pytest.raises(
        ValueError, match=r"broadcastable to .* = \(2, 3, 4, 5\), True = may attend"
    ):
        check_mask(mask, batch=2, heads=3, q_len=4, k_len=5)
