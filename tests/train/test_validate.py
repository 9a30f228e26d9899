"""Validation: the loss summed over the whole split whatever the batching, scores that pick
checkpoint-best, the record written to metrics.jsonl, the model left in training mode."""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

import pytest
import torch

from aiayn.evaluate.metrics import bleu
from aiayn.model import build_model
from aiayn.train.distributed import DistributedContext
from aiayn.train.task import load_task_data
from aiayn.train.validate import Validation, validate, validation_loss


def test_the_score_that_picks_the_best_checkpoint():
    plain = Validation(loss=2.0, nll=1.5, ppl=math.exp(1.5), n_tokens=10)
    assert plain.score("auto") == plain.score("loss") == -2.0
    with pytest.raises(ValueError, match="best_metric 'bleu' needs train.bleu on"):
        plain.score("bleu")
    scored = Validation(2.0, 1.5, math.exp(1.5), 10, bleu=bleu(["a b c d"], ["a b c d"]))
    assert scored.score("auto") == scored.score("bleu") == pytest.approx(100.0)
    record = scored.record()
    assert record["bleu"] == pytest.approx(100.0) and "nrefs:1" in record["bleu_signature"]
    assert str(scored).startswith("valid loss 2.000 | ppl 4.48 | BLEU = 100.00")


def test_the_loss_is_the_same_sum_whatever_the_batch_size(make_config, tmp_path):
    config = make_config(model={"dropout": 0.0})
    data = load_task_data(config.data, tmp_path, DistributedContext(), max_len=64)
    model = build_model(config.model.replace(vocab_size=data.tokenizer.vocab_size)).eval()
    small = config.replace(data=dataclasses.replace(config.data, max_tokens=40))
    with torch.no_grad():
        loss, nll, n = validation_loss(model, data.valid, config, torch.device("cpu"))
        loss_small, nll_small, n_small = validation_loss(
            model, data.valid, small, torch.device("cpu")
        )
    targets = [data.tokenizer.encode(target) for _, target in data.valid_pairs]
    assert n == n_small == sum(len(t) + 1 for t in targets)  # every target token and its EOS
    assert loss == pytest.approx(loss_small, rel=1e-6) and nll == pytest.approx(nll_small, rel=1e-6)


def test_validate_scores_a_few_sentences_and_leaves_the_model_training(make_config, tmp_path):
    config = make_config(train={"bleu": True, "bleu_max_sentences": 3})
    data = load_task_data(config.data, tmp_path, DistributedContext(), max_len=64)
    model = build_model(config.model.replace(vocab_size=data.tokenizer.vocab_size)).train()
    result = validate(model, data, config, device=torch.device("cpu"), autocast=nullcontext)
    assert model.training and len(result.examples) == 3 and result.bleu is not None
    assert result.ppl == pytest.approx(math.exp(result.nll)) and result.seconds > 0
