"""Label-smoothed cross entropy (§5.4, Szegedy et al. 2016), summed in fp32 over real tokens,
and the loss of a model on a `Batch` (translation or language modelling alike).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from aiayn.data.batching import Batch


@dataclass
class TokenLoss:
    """Sums over the non-padding target tokens of a batch (fp32 scalars)."""

    loss: Tensor
    """Label-smoothed cross entropy: what training minimises."""
    nll: Tensor
    """Negative log-likelihood of the targets: perplexity = exp(nll / n_tokens)."""
    n_tokens: Tensor
    """Tokens counted (targets that are not padding)."""


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, *, epsilon: float, ignore_index: int
) -> TokenLoss:
    """Cross entropy against q = (1 - epsilon) * one_hot(target) + epsilon / vocab_size.

    "During training, we employed label smoothing of value epsilon_ls = 0.1. This hurts
    perplexity, as the model learns to be more unsure, but improves accuracy and BLEU score"
    (§5.4). The smoothing spreads epsilon uniformly over the whole vocabulary, as Szegedy et al.
    and `F.cross_entropy(label_smoothing=...)`. Logits are cast to fp32 first, so the softmax and
    the sums are accurate under bf16/fp16 autocast.

    Shape:
        logits: (batch, len, vocab_size), target: (batch, len) -> scalars
    """
    log_probs = logits.float().log_softmax(dim=-1)  # (batch, len, vocab)
    keep = target != ignore_index  # (batch, len)
    nll = -log_probs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (batch, len)
    smooth = -log_probs.mean(dim=-1)  # (batch, len): cross entropy against the uniform
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    zero = loss.new_zeros(())
    return TokenLoss(
        loss=loss.where(keep, zero).sum(),
        nll=nll.where(keep, zero).sum(),
        n_tokens=keep.sum(),
    )


def batch_loss(model: nn.Module, batch: Batch, *, epsilon: float, pad_id: int) -> TokenLoss:
    """Teacher-forced loss of `model` on `batch`: an encoder-decoder when the batch has a source,
    a language model when `batch.src` is None. The model returns logits; the loss is made here.
    """
    if batch.src is None:
        logits = model(batch.tgt_in, batch.tgt_valid)  # (batch, len, vocab)
    else:
        logits = model(batch.src, batch.tgt_in, batch.src_valid, batch.tgt_valid)
    return label_smoothed_cross_entropy(logits, batch.tgt_out, epsilon=epsilon, ignore_index=pad_id)
