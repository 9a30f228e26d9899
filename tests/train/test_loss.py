"""Label-smoothed cross entropy: torch's reference, padding ignored, fp32 under bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aiayn.data.batching import collate, lm_batch
from aiayn.model import ModelConfig, build_model
from aiayn.train.loss import batch_loss, label_smoothed_cross_entropy

PAD = 0


def logits_and_target(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 11, generator=g)
    target = torch.randint(1, 11, (3, 5), generator=g)
    target[0, 3:], target[2, 1:] = PAD, PAD
    return logits, target


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_matches_torch_cross_entropy_with_label_smoothing(epsilon):
    logits, target = logits_and_target()
    out = label_smoothed_cross_entropy(logits, target, epsilon=epsilon, ignore_index=PAD)
    expected = F.cross_entropy(
        logits.flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=epsilon,
        reduction="sum",
    )  # fmt: skip
    nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD, reduction="sum")
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.nll, nll)
    assert int(out.n_tokens) == int((target != PAD).sum()) == 9


def test_padding_positions_do_not_count():
    logits, target = logits_and_target()
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, ignore_index=PAD)
    changed = logits.clone()
    changed[target == PAD] = 1e4  # garbage where the target is padding
    again = label_smoothed_cross_entropy(changed, target, epsilon=0.1, ignore_index=PAD)
    torch.testing.assert_close(out.loss, again.loss)


def test_smoothing_raises_the_loss_of_a_confident_correct_model():
    target = torch.tensor([[1, 2, 3]])
    logits = F.one_hot(target, 6).float() * 20  # all probability on the right token
    sharp = label_smoothed_cross_entropy(logits, target, epsilon=0.0, ignore_index=PAD)
    smooth = label_smoothed_cross_entropy(logits, target, epsilon=0.1, ignore_index=PAD)
    assert float(sharp.loss) < 1e-6 < float(smooth.loss) and float(smooth.nll) < 1e-6


def test_low_precision_logits_are_summed_in_fp32():
    logits, target = logits_and_target()
    out = label_smoothed_cross_entropy(
        logits.to(torch.bfloat16), target, epsilon=0.1, ignore_index=PAD
    )
    assert out.loss.dtype == out.nll.dtype == torch.float32
    reference = label_smoothed_cross_entropy(
        logits.to(torch.bfloat16).float(), target, epsilon=0.1, ignore_index=PAD
    )
    assert torch.equal(out.loss, reference.loss)


def test_batch_loss_serves_both_model_kinds():
    torch.manual_seed(0)
    small = dict(vocab_size=20, d_model=16, n_heads=2, d_ff=32, max_len=16, dropout=0.0)
    translation = build_model(ModelConfig(n_encoder_layers=1, n_decoder_layers=1, **small))
    batch = collate([([5, 6, 7], [8, 9]), ([5], [10, 11, 12])])
    out = batch_loss(translation, batch, epsilon=0.1, pad_id=PAD)
    assert int(out.n_tokens) == batch.n_tgt_tokens == 7
    decoder_only = ModelConfig(kind="decoder-only", n_encoder_layers=0, n_decoder_layers=1, **small)
    lm = build_model(decoder_only)
    windows = lm_batch(torch.arange(4, 20), [0, 5], 6)
    out = batch_loss(lm, windows, epsilon=0.0, pad_id=PAD)
    logits = lm(windows.tgt_in)
    expected = F.cross_entropy(logits.flatten(0, 1), windows.tgt_out.flatten(), reduction="sum")
    torch.testing.assert_close(out.loss, expected)


def autograd_reference(logits, target, epsilon):
    """The loss the closed-form gradient must differentiate: autograd through log-softmax."""
    log_probs = logits.log_softmax(dim=-1)
    keep = target != PAD
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = (1 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)
    return (loss * keep).sum(), (nll * keep).sum()


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.7, -2.0)])
def test_closed_form_gradient_equals_autograds(epsilon, weights):
    logits, target = logits_and_target(seed=1)
    logits = (logits * 3).double()  # float64: the two ways agree to rounding
    mine = logits.clone().requires_grad_()
    out = label_smoothed_cross_entropy(mine, target, epsilon=epsilon, ignore_index=PAD)
    (weights[0] * out.loss + weights[1] * out.nll).backward()
    theirs = logits.clone().requires_grad_()
    loss, nll = autograd_reference(theirs, target, epsilon)
    (weights[0] * loss + weights[1] * nll).backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12)
    assert mine.grad[target == PAD].abs().max() == 0  # padding gets no gradient
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.nll, nll)


def test_gradient_reaches_bf16_logits_in_their_dtype():
    logits, target = logits_and_target(seed=2)
    low = logits.to(torch.bfloat16).requires_grad_()
    label_smoothed_cross_entropy(low, target, epsilon=0.1, ignore_index=PAD).loss.backward()
    reference = logits.to(torch.bfloat16).float().requires_grad_()
    autograd_reference(reference, target, 0.1)[0].backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad, reference.grad.to(torch.bfloat16))


def test_the_graph_refuses_a_second_backward():
    logits, target = logits_and_target()
    logits.requires_grad_()
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, ignore_index=PAD)
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward only once"):
        out.loss.backward()
