"""Validation during training: loss and perplexity on the validation split and, for translation,
BLEU and chrF of greedy decodings scored by sacrebleu against the raw references (§6.1). The
decodings come from `aiayn.translate`, as `aiayn evaluate`'s do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aiayn.config import RunConfig
from aiayn.data.batching import TokenBatchSampler
from aiayn.evaluate.metrics import CorpusScore, bleu, chrf, perplexity
from aiayn.train.loss import batch_loss
from aiayn.train.task import Split, TaskData
from aiayn.translate import translate_texts


@dataclass
class Validation:
    """Scores of one validation pass."""

    loss: float
    """Label-smoothed cross entropy per target token (comparable to the training loss)."""
    nll: float
    """Negative log-likelihood per target token."""
    ppl: float
    """exp(nll)."""
    n_tokens: int
    bleu: CorpusScore | None = None
    chrf: CorpusScore | None = None
    seconds: float = 0.0
    examples: list[tuple[str, str, str]] | None = None
    """A few (source, reference, hypothesis) triples."""

    def score(self, metric: str) -> float:
        """The number checkpoint-best is chosen by; higher is better (losses are negated)."""
        if metric == "auto":
            metric = "bleu" if self.bleu is not None else "loss"
        if metric in ("bleu", "chrf"):
            result = self.bleu if metric == "bleu" else self.chrf
            if result is None:
                raise ValueError(f"best_metric {metric!r} needs train.bleu on and a translation")
            return result.score
        return -self.loss

    def record(self) -> dict[str, Any]:
        """A metrics.jsonl entry (without step and epoch)."""
        out: dict[str, Any] = {"loss": self.loss, "nll": self.nll, "ppl": self.ppl}
        for result, key in ((self.bleu, "bleu"), (self.chrf, "chrf")):
            if result is not None:
                out[key], out[f"{key}_signature"] = result.score, result.signature
        out["seconds"] = self.seconds
        return out

    def __str__(self) -> str:
        text = f"valid loss {self.loss:.3f} | ppl {self.ppl:.2f}"
        for result in (self.bleu, self.chrf):
            if result is not None:
                text += f" | {result}"
        return text


@torch.no_grad()
def validate(
    model: nn.Module,
    data: TaskData,
    config: RunConfig,
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> Validation:
    """Score `model` (an unwrapped module; left in train mode afterwards) on the validation data."""
    start = time.perf_counter()
    model.eval()
    try:
        with autocast():
            loss, nll, n_tokens = validation_loss(model, data.valid, config, device)
            ppl = perplexity(nll, n_tokens)
            result = Validation(loss / n_tokens, nll / n_tokens, ppl, n_tokens)
            if data.valid_pairs and config.train.bleu:
                pairs = data.valid_pairs[: config.train.bleu_max_sentences]
                hyps = translate_texts(
                    model, data.tokenizer, [s for s, _ in pairs], config.decode.replace(beam=1)
                )
                refs = [t for _, t in pairs]
                result.bleu, result.chrf = bleu(hyps, refs), chrf(hyps, refs)
                result.examples = [(s, t, h) for (s, t), h in zip(pairs, hyps, strict=True)]
    finally:
        model.train()
    result.seconds = time.perf_counter() - start
    return result


def validation_loss(
    model: nn.Module, split: Split, config: RunConfig, device: torch.device
) -> tuple[float, float, int]:
    """Summed (label-smoothed loss, nll, target tokens) over a split, in a fixed batch order."""
    sampler = TokenBatchSampler(split.lengths, config.data.max_tokens, shuffle=False)
    loss = nll = 0.0
    n_tokens = 0
    for indices in sampler:
        out = batch_loss(
            model,
            split.make_batch(indices).to(device),
            epsilon=config.train.label_smoothing,
            pad_id=config.model.pad_id,
        )
        loss, nll = loss + out.loss.item(), nll + out.nll.item()
        n_tokens += int(out.n_tokens)
    return loss, nll, n_tokens
