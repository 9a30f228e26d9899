"""Checkpoint averaging (§6.1): the parameter-wise mean of the last N checkpoints, loadable."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from aiayn.config import RunConfig, save_config
from aiayn.model import ModelConfig, build_model
from aiayn.train.average import average_checkpoints
from aiayn.train.checkpoint import TrainerState, checkpoint_dir, load_model, save_checkpoint

TINY = ModelConfig(
    vocab_size=30, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
    max_len=16,
)  # fmt: skip


def test_average_of_the_last_checkpoints(tmp_path):
    save_config(RunConfig(model=TINY), tmp_path / "config.yaml")
    models = []
    for step in range(1, 5):
        torch.manual_seed(step)
        models.append(build_model(TINY))
        save_checkpoint(checkpoint_dir(tmp_path, step), models[-1], TrainerState(step=step))
    out = average_checkpoints(tmp_path, last=3)
    assert out == tmp_path / "averaged" / "model.safetensors"
    averaged, _ = load_model(tmp_path, "averaged")
    for name, tensor in averaged.state_dict().items():
        expected = sum(m.state_dict()[name].double() for m in models[1:]) / 3
        torch.testing.assert_close(tensor, expected.float(), msg=name)
    assert averaged.out_proj.weight is averaged.src_embed.tokens.weight
    meta = safetensors.safe_open(out, "pt").metadata()
    assert "checkpoint-00000002" in meta["averaged"]
    assert "checkpoint-00000001" not in meta["averaged"]


def test_average_needs_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        average_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        average_checkpoints(tmp_path, last=0)


def test_average_until_a_step_leaves_later_checkpoints_out(tmp_path):
    save_config(RunConfig(model=TINY), tmp_path / "config.yaml")
    models = []
    for step in (10, 20, 30, 40):
        torch.manual_seed(step)
        models.append(build_model(TINY))
        save_checkpoint(checkpoint_dir(tmp_path, step), models[-1], TrainerState(step=step))
    average_checkpoints(tmp_path, last=2, until=35)
    averaged, _ = load_model(tmp_path, "averaged")
    for name, tensor in averaged.state_dict().items():
        expected = (models[1].state_dict()[name].double() + models[2].state_dict()[name]) / 2
        torch.testing.assert_close(tensor, expected.float(), msg=name)
    with pytest.raises(FileNotFoundError, match="at or before update 5"):
        average_checkpoints(tmp_path, until=5)
