"""Training on binarized shards is training on the text: the same tokenizer, pairs, filtering and
batches give the same losses and weights, and a run on shards resumes and translates."""

from __future__ import annotations

import safetensors.torch
import torch

import aiayn
from aiayn.data.binarized import binarize_pairs
from aiayn.train.log import read_metrics
from aiayn.train.loop import train


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_shards_train_exactly_as_the_text_they_came_from(make_config, corpus, tmp_path):
    shards = tmp_path / "shards"
    for split in ("train", "valid"):
        binarize_pairs(corpus / f"{split}.de", corpus / f"{split}.en", corpus, shards,
                       split=split, shard_pairs=50, workers=1, progress=False)  # fmt: skip
    text = make_config(train={"max_steps": 30, "eval_every": 15})
    binarized = make_config(
        data={"dataset": "binarized", "data_dir": str(shards), "train_files": [],
              "valid_files": [], "tokenizer": None},
        train={"max_steps": 30, "eval_every": 15},
    )  # fmt: skip
    train(text, run_dir=tmp_path / "text", progress=False)
    train(binarized, run_dir=tmp_path / "bin", progress=False)
    assert losses(tmp_path / "bin") == losses(tmp_path / "text")
    weights = "checkpoint-00000030/model.safetensors"
    a = safetensors.torch.load_file(tmp_path / "text" / weights)
    b = safetensors.torch.load_file(tmp_path / "bin" / weights)
    assert all(torch.equal(a[name], b[name]) for name in a)
    valid = [r for r in read_metrics(tmp_path / "bin") if r["kind"] == "valid"]
    expected = [r for r in read_metrics(tmp_path / "text") if r["kind"] == "valid"]
    assert [r["bleu"] for r in valid] == [r["bleu"] for r in expected]  # decoded references
    model = aiayn.load(tmp_path / "bin", "last")
    assert model.evaluate().sentences == len((corpus / "valid.de").read_text().splitlines())
