"""Sliding-window perplexity: every token but the first is scored once, with the context the
protocol promises (checked against direct computation)."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.evaluate.perplexity import column_perplexity, sliding_window_perplexity
from tests.generate.models import tiny_model


def nll_direct(model, tokens: torch.Tensor, target: int, context: int) -> float:
    """-log P(tokens[target] | the `context` tokens before it, or all of them near the start)."""
    window = tokens[max(0, target - context) : target][None]
    with torch.no_grad():
        return -float(model(window).log_softmax(-1)[0, -1, tokens[target]])


@pytest.fixture(scope="module")
def lm_and_text():
    lm = tiny_model("decoder-only", max_len=16)
    return lm, torch.randint(4, 13, (50,), generator=torch.Generator().manual_seed(0))


def test_stride_one_gives_every_token_the_full_context(lm_and_text):
    lm, tokens = lm_and_text
    result = sliding_window_perplexity(lm, tokens, context=8, stride=1, batch_size=5)
    expected = [nll_direct(lm, tokens, t, 8) for t in range(1, len(tokens))]
    assert result.n_tokens == len(tokens) - 1
    assert result.nll == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.nll))


def test_non_overlapping_windows_and_a_text_in_one_window(lm_and_text):
    lm, tokens = lm_and_text
    result = sliding_window_perplexity(lm, tokens, context=8, stride=8)
    # Window w reads tokens 8w .. 8w+7 and predicts 8w+1 .. 8w+8.
    expected = [nll_direct(lm, tokens, t, (t - 1) % 8 + 1) for t in range(1, len(tokens))]
    assert result.nll == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    short = tokens[:12]
    whole = sliding_window_perplexity(lm, short, context=16, stride=3)
    expected = [nll_direct(lm, short, t, 16) for t in range(1, 12)]
    assert whole.n_tokens == 11 and whole.nll == pytest.approx(sum(expected) / 11, abs=1e-5)
    assert "stride 3" in str(whole) and "16 tokens" in whole.protocol


def test_bad_protocols_are_refused(lm_and_text):
    lm, tokens = lm_and_text
    with pytest.raises(ValueError, match="max_len"):
        sliding_window_perplexity(lm, tokens, context=17, stride=4)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_perplexity(lm, tokens, context=8, stride=9)


def pytorch_example_nll(lm, tokens: torch.Tensor, columns: int, bptt: int) -> float:
    """PyTorch word_language_model's main.py, as written there: `batchify`, then `evaluate` over
    `get_batch` chunks, `total_loss += len(data) * criterion(...)`, divided by len - 1."""
    n = tokens.numel() // columns
    data = tokens[: n * columns].view(columns, -1).t().contiguous()  # (n, columns)
    total = 0.0
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            seq_len = min(bptt, len(data) - 1 - i)
            source, target = data[i : i + seq_len], data[i + 1 : i + 1 + seq_len]
            logits = lm(source.t())  # batch-first here: (columns, seq_len, vocab)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.t().flatten())
            total += len(source) * float(loss)
    return total / (len(data) - 1)


@pytest.mark.parametrize(("columns", "bptt"), [(1, 8), (3, 8), (4, 5)])
def test_columns_follow_the_pytorch_example_protocol(lm_and_text, columns, bptt):
    lm, tokens = lm_and_text
    result = column_perplexity(lm, tokens, columns=columns, context=bptt, batch_size=3)
    assert result.nll == pytest.approx(pytorch_example_nll(lm, tokens, columns, bptt), abs=1e-5)
    assert result.n_tokens == columns * (len(tokens) // columns - 1)
    assert f"cut into {columns} columns" in str(result) and result.columns == columns
    with pytest.raises(ValueError, match="cannot be cut into 30 columns"):
        column_perplexity(lm, tokens, columns=30, context=bptt)
