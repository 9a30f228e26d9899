"""Checkpoints: exact round trips, atomic writes (a write that dies halfway leaves the previous
checkpoint loadable), leftovers ignored and cleaned, pruning, and `load_model`."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from aiayn.config import RunConfig, save_config
from aiayn.model import ModelConfig, build_model
from aiayn.train import checkpoint
from aiayn.train.checkpoint import (
    TrainerState,
    checkpoint_dir,
    clean_run_dir,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_optimizer_state,
    load_trainer_state,
    load_weights,
    prune_checkpoints,
    resolve_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

TINY = ModelConfig(
    vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
    max_len=32,
)  # fmt: skip


def make_run(tmp_path, steps=(1, 2, 3)):
    """A run dir with a config and a checkpoint (with optimizer) per step; returns the model."""
    torch.manual_seed(0)
    config = RunConfig(model=TINY)
    save_config(config, tmp_path / "config.yaml")
    model = build_model(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    for step in steps:
        model(torch.randint(4, 40, (2, 5)), torch.randint(4, 40, (2, 4))).sum().backward()
        optimizer.step()
        state = TrainerState(step=step, sampler={"epoch": 1, "position": step})
        save_checkpoint(
            checkpoint_dir(tmp_path, step), model, state, optimizer_state=optimizer.state_dict()
        )
    return model, optimizer


def test_round_trip_is_exact(tmp_path):
    model, optimizer = make_run(tmp_path, steps=(7,))
    path = tmp_path / "checkpoint-00000007"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors", "optimizer.pt", "trainer_state.json"
    }  # fmt: skip
    loaded, config = load_model(tmp_path, "last")
    assert config.model == TINY and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.out_proj.weight is loaded.src_embed.tokens.weight  # still tied
    fresh = torch.optim.Adam(build_model(TINY).parameters())
    fresh.load_state_dict(load_optimizer_state(path))  # weights_only=True suffices
    saved, original = fresh.state_dict()["state"], optimizer.state_dict()["state"]
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[i]["exp_avg_sq"], original[i]["exp_avg_sq"]) for i in saved)
    assert load_trainer_state(path) == TrainerState(step=7, sampler={"epoch": 1, "position": 7})


def test_rng_states_round_trip_through_json():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def test_a_write_that_dies_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = make_run(tmp_path, steps=(1, 2))
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint-00000002").iterdir()}

    def die(*args, **kwargs):
        raise OSError("disk full")  # after model.safetensors was written

    monkeypatch.setattr(checkpoint.torch, "save", die)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(
            checkpoint_dir(tmp_path, 3),
            model,
            TrainerState(step=3),
            optimizer_state=optimizer.state_dict(),
        )
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000002"
    assert not (tmp_path / "checkpoint-00000003").exists()
    after = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint-00000002").iterdir()}
    assert after == before
    load_model(tmp_path, "last")


def test_what_a_kill_leaves_is_ignored_then_cleaned(tmp_path):
    make_run(tmp_path, steps=(1, 2))
    half = tmp_path / ".tmp-checkpoint-00000003"  # killed while writing
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    incomplete = tmp_path / "checkpoint-00000004"  # no trainer_state.json
    incomplete.mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-00000001", "checkpoint-00000002"
    ]  # fmt: skip
    assert resolve_weights(tmp_path, "best").parent.name == "checkpoint-00000002"
    clean_run_dir(tmp_path)
    assert not half.exists()


def test_a_kill_between_the_renames_of_a_replacement_is_repaired(tmp_path):
    model, _ = make_run(tmp_path, steps=(1,))
    save_checkpoint(tmp_path / "checkpoint-best", model, TrainerState(step=1))
    (tmp_path / "checkpoint-best").rename(tmp_path / ".old-checkpoint-best")  # first rename done
    clean_run_dir(tmp_path)
    assert resolve_weights(tmp_path, "best") == tmp_path / "checkpoint-best" / "model.safetensors"
    save_checkpoint(tmp_path / "checkpoint-best", model, TrainerState(step=5))  # replaces
    assert load_trainer_state(tmp_path / "checkpoint-best").step == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_prune_keeps_the_newest(tmp_path):
    make_run(tmp_path, steps=(1, 2, 3, 4))
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["checkpoint-00000001", "checkpoint-00000002"]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-00000003", "checkpoint-00000004"
    ]  # fmt: skip


def test_load_model_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints yet"):
        resolve_weights(tmp_path, "last")
    make_run(tmp_path, steps=(1,))
    with pytest.raises(FileNotFoundError, match="averaged"):
        load_model(tmp_path, "averaged")
    other = build_model(TINY.replace(d_ff=48))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_weights(other, tmp_path / "checkpoint-00000001")
    assert resolve_weights(tmp_path, "checkpoint-00000001").parent.name == "checkpoint-00000001"


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    make_run(tmp_path, steps=(1,))
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", spy)
    load_optimizer_state(tmp_path / "checkpoint-00000001")
    load_model(tmp_path, "last")
    assert calls == [True]
