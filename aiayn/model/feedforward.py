"""Position-wise feed-forward network (§3.3).

FFN(x) = max(0, x W_1 + b_1) W_2 + b_2                                              (Eq. 2)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FeedForward(nn.Module):
    """Two linear maps with a ReLU (Eq. 2; GELU as an option, as in GPT-2) applied to each
    position separately; d_model -> d_ff -> d_model.

    Shape:
        x: (batch, len, d_model) -> (batch, len, d_model)
    """

    def __init__(
        self, d_model: int, d_ff: int, *, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.linear2 = nn.Linear(d_ff, d_model)  # W_2, b_2
        self.activation = F.relu if activation == "relu" else F.gelu
        # Hidden-layer dropout: not in the paper, off by default (ModelConfig.activation_dropout).
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))
