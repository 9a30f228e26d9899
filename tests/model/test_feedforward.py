"""The position-wise feed-forward network (§3.3): Eq. 2 written out, position by position."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aiayn.model.feedforward import FeedForward


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward_is_eq_2_at_every_position(activation):
    torch.manual_seed(2)
    ff = FeedForward(16, 32, activation=activation).eval()
    x = torch.randn(2, 3, 16)
    act = F.relu if activation == "relu" else F.gelu
    expected = (
        act(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    )
    torch.testing.assert_close(ff(x), expected)
    torch.testing.assert_close(ff(x[:, 1:2]), ff(x)[:, 1:2])  # position-wise
    with pytest.raises(ValueError, match="activation must be 'relu' or 'gelu', got 'tanh'"):
        FeedForward(16, 32, activation="tanh")
