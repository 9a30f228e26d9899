"""Perplexity of a decoder-only model on a long text with a stated protocol: sliding windows of
`context` tokens moved by `stride`, each token predicted once (Hugging Face's "perplexity of
fixed-length models"; stride = context gives non-overlapping windows, as during training); or,
with `columns`, the protocol of PyTorch's word language model example and its nn.Transformer
tutorial: the token stream cut into `columns` equal parts (`batchify`, the remainder dropped),
each read in non-overlapping windows of `context` (`bptt`) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aiayn.evaluate.metrics import perplexity
from aiayn.model.transformer import LanguageModel


@dataclass(frozen=True)
class Perplexity:
    """exp(mean negative log-likelihood per token) and the protocol that produced it."""

    perplexity: float
    nll: float
    """Mean negative log-likelihood per token, in nats."""
    n_tokens: int
    """Tokens predicted: all but the first of the text."""
    context: int
    stride: int
    columns: int | None = None
    """The stream was cut into this many parts first (PyTorch's `batchify`); None: not cut."""

    @property
    def protocol(self) -> str:
        if self.columns is not None:
            return (
                f"PyTorch's word language model protocol: the text cut into {self.columns} "
                f"columns, each read in non-overlapping windows of {self.context} tokens (bptt); "
                f"{self.n_tokens} tokens predicted"
            )
        return (
            f"sliding windows of {self.context} tokens, stride {self.stride}: each of "
            f"{self.n_tokens} tokens predicted once with at least "
            f"{self.context - self.stride} tokens of context (fewer at the start)"
        )

    def __str__(self) -> str:
        return f"perplexity {self.perplexity:.3f} (nll {self.nll:.4f} nats/token; {self.protocol})"


@torch.no_grad()
def sliding_window_perplexity(
    model: LanguageModel, tokens: Tensor, *, context: int, stride: int, batch_size: int = 16
) -> Perplexity:
    """Score every token of `tokens` (1-D) but the first.

    Window w reads tokens [w * stride, w * stride + context) and scores the predictions of the
    tokens no earlier window scored. With stride < context each scored token sees at least
    `context - stride` tokens before it.
    """
    if not 1 <= stride <= context <= model.config.max_len:
        raise ValueError(
            f"need 1 <= stride <= context <= the model's max_len ({model.config.max_len}); "
            f"got {context=}, {stride=}"
        )
    if tokens.dim() != 1 or tokens.numel() < 2:
        raise ValueError(f"need a 1-D text of at least 2 tokens, got shape {tuple(tokens.shape)}")
    last = tokens.numel() - 1  # targets are tokens 1 .. last
    starts = [0]
    while starts[-1] + context < last:
        starts.append(starts[-1] + stride)
    nll, n_tokens, scored_up_to = 0.0, 0, 0  # targets 1 .. scored_up_to are done
    device = next(model.parameters()).device
    for first in range(0, len(starts), batch_size):
        group = starts[first : first + batch_size]
        windows = _windows(tokens, group, context).to(device)  # (batch, context + 1)
        log_probs = model(windows[:, :-1]).log_softmax(dim=-1)  # (batch, context, vocab)
        target_nll = -log_probs.gather(-1, windows[:, 1:, None]).squeeze(-1)
        for row, start in enumerate(group):
            width = min(context, last - start)  # window targets start + 1 .. start + width
            new_from = max(0, scored_up_to - start)
            nll += float(target_nll[row, new_from:width].double().sum())
            n_tokens += width - new_from
            scored_up_to = start + width
    return Perplexity(perplexity(nll, n_tokens), nll / n_tokens, n_tokens, context, stride)


def column_perplexity(
    model: LanguageModel, tokens: Tensor, *, columns: int, context: int, batch_size: int = 16
) -> Perplexity:
    """PyTorch's word language model protocol (`main.py`'s `batchify` and `evaluate`, as its
    nn.Transformer tutorial scores WikiText-2 with `eval_batch_size = 10`, `bptt = 35`): keep the
    first `len // columns * columns` tokens, cut them into `columns` contiguous parts, and score
    every token of a part but its first in non-overlapping windows of `context` tokens, each
    window starting without context. exp of the mean over all scored tokens."""
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    length = tokens.numel() // columns
    if length < 2:
        raise ValueError(f"{tokens.numel()} tokens cannot be cut into {columns} columns of 2")
    nll, n_tokens = 0.0, 0
    for part in tokens[: length * columns].view(columns, length):
        result = sliding_window_perplexity(
            model, part, context=context, stride=context, batch_size=batch_size
        )
        nll += result.nll * result.n_tokens
        n_tokens += result.n_tokens
    return Perplexity(
        perplexity(nll, n_tokens), nll / n_tokens, n_tokens, context, context, columns
    )


def _windows(tokens: Tensor, starts: list[int], context: int) -> Tensor:
    """(len(starts), context + 1) windows, the last ones right-padded by repeating the end."""
    index = torch.tensor(starts)[:, None] + torch.arange(context + 1)
    return tokens[index.clamp(max=tokens.numel() - 1)]
