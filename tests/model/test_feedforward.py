"""The position-wise feed-forward network (§3.3): Eq. 2 written out, position by position."""

from __future__ import annotations

import pytest
import torch

from aiayn.model.feedforward import FeedForward


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's `gelu_new`, written out: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))


REFERENCE = {
    "relu": lambda x: x.clamp(min=0),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5)),
    "gelu_tanh": gelu_tanh,
    "silu": lambda x: x / (1 + torch.exp(-x)),
}


@pytest.mark.parametrize("activation", sorted(REFERENCE))
def test_feed_forward_is_eq_2_at_every_position(activation):
    torch.manual_seed(2)
    ff = FeedForward(16, 32, activation=activation).eval()
    x = torch.randn(2, 3, 16)
    act = REFERENCE[activation]
    expected = (
        act(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    )
    torch.testing.assert_close(ff(x), expected)
    torch.testing.assert_close(ff(x[:, 1:2]), ff(x)[:, 1:2])  # position-wise
    with pytest.raises(ValueError, match="activation must be one of .*'silu'.*, got 'tanh'"):
        FeedForward(16, 32, activation="tanh")
