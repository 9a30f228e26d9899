"""Label-smoothed cross entropy (§5.4, Szegedy et al. 2016), summed in fp32 over real tokens,
and the loss of a model on a `Batch` (translation or language modelling alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
    and `F.cross_entropy(label_smoothing=...)`. Logits are cast to fp32 first (float64 stays),
    so the softmax and the sums are accurate under bf16/fp16 autocast. The gradient is the closed
    form `softmax(logits) - q` (`SmoothedCrossEntropy`), not autograd's way through log-softmax,
    gather and mean.

    Shape:
        logits: (batch, len, vocab_size), target: (batch, len) -> scalars
    """
    keep = target != ignore_index  # (batch, len)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 or float64
    loss, nll = SmoothedCrossEntropy.apply(logits, target.clamp(min=0), epsilon)
    zero = loss.new_zeros(())
    return TokenLoss(
        loss=loss.where(keep, zero).sum(),
        nll=nll.where(keep, zero).sum(),
        n_tokens=keep.sum(),
    )


class SmoothedCrossEntropy(torch.autograd.Function):
    """Per-position label-smoothed cross entropy and negative log-likelihood, with the gradient
    written out: d loss / d logits = softmax(logits) - q, and d nll / d logits = softmax - one_hot.

    Autograd's own way computes the same through the backward passes of log-softmax, of the
    gather (a vocabulary-wide tensor of zeros with the targets scattered in) and of the mean
    (another, divided by the vocabulary size): several passes over a (tokens, vocabulary)
    tensor that, at a vocabulary of 8,000, cost more than a fifth of an fp32 training step on a
    2-core CPU. Here the backward turns the saved log-probabilities into probabilities in place
    and adds the targets' terms: two passes. So its graph can be run backward once only.

    Shape:
        logits: (..., vocab) fp32, target: (...) in [0, vocab) -> loss, nll: (...)
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
        log_probs = logits.log_softmax(dim=-1)  # (..., vocab)
        nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (...)
        smooth = -log_probs.mean(dim=-1)  # (...): cross entropy against the uniform
        ctx.save_for_backward(log_probs, target)
        ctx.epsilon, ctx.used = epsilon, False
        return (1.0 - epsilon) * nll + epsilon * smooth, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        # (...) each; an output left out of the loss comes as zeros (autograd's default)
        if ctx.used:
            raise RuntimeError("SmoothedCrossEntropy's graph can be run backward only once")
        ctx.used = True
        log_probs, target = ctx.saved_tensors
        epsilon, vocab = ctx.epsilon, log_probs.size(-1)
        # sum over both outputs of grad * (softmax - target distribution), row by row
        grad = log_probs.exp_().mul_((grad_loss + grad_nll).unsqueeze(-1))  # (..., vocab)
        if epsilon:
            grad.sub_((epsilon / vocab * grad_loss).unsqueeze(-1))
        on_target = (1.0 - epsilon) * grad_loss + grad_nll  # (...)
        grad.scatter_add_(-1, target.unsqueeze(-1), -on_target.unsqueeze(-1))
        return grad, None, None


def batch_loss(model: nn.Module, batch: Batch, *, epsilon: float, pad_id: int) -> TokenLoss:
    """Teacher-forced loss of `model` on `batch`: an encoder-decoder when the batch has a source,
    a language model when `batch.src` is None. The model returns logits; the loss is made here.
    """
    if batch.src is None:
        logits = model(batch.tgt_in, batch.tgt_valid)  # (batch, len, vocab)
    else:
        logits = model(batch.src, batch.tgt_in, batch.src_valid, batch.tgt_valid)
    return label_smoothed_cross_entropy(logits, batch.tgt_out, epsilon=epsilon, ignore_index=pad_id)
