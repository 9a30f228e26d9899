"""Position-wise feed-forward network (§3.3).

FFN(x) = max(0, x W_1 + b_1) W_2 + b_2                                              (Eq. 2)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,  # Eq. 2
    "gelu": F.gelu,  # exact: x * Phi(x)
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # GPT-2's `gelu_new`
    "silu": F.silu,  # x * sigmoid(x): Marian's `swish`
}


class FeedForward(nn.Module):
    """Two linear maps with a ReLU (Eq. 2; GELU or SiLU as options, as GPT-2 and Marian use)
    applied to each position separately; d_model -> d_ff -> d_model.

    Shape:
        x: (batch, len, d_model) -> (batch, len, d_model)
    """

    def __init__(
        self, d_model: int, d_ff: int, *, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.linear2 = nn.Linear(d_ff, d_model)  # W_2, b_2
        self.activation = ACTIVATIONS[activation]
        # Hidden-layer dropout: not in the paper, off by default (ModelConfig.activation_dropout).
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))
