"""FSDP (`train.strategy: fsdp`) in 2 CPU processes (gloo), and activation checkpointing: the same
updates as one process, checkpoints every other command reads, exact resume after SIGKILL."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import safetensors.torch
import torch

import aiayn
from aiayn.config import save_config
from aiayn.model.transformer import build_model
from aiayn.train.checkpoint import latest_checkpoint, load_optimizer_state, load_weights
from aiayn.train.distributed import DistributedContext
from aiayn.train.log import read_metrics
from aiayn.train.loop import Trainer, train
from aiayn.train.parallel import transformer_layers
from aiayn.train.task import load_task_data
from aiayn.train.validate import validate

REPO = Path(__file__).resolve().parents[2]


def torchrun(config_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "aiayn", "train", str(config_file), "--run-dir", str(run_dir), "--no-progress",
            *extra]  # fmt: skip


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run_dir / f"checkpoint-{step:08d}" / "model.safetensors")


@pytest.mark.parametrize("make", ["make_config", "make_lm_config"])
def test_activation_checkpointing_changes_no_update(make, request, tmp_path):
    """Recomputed activations, with dropout (its masks replayed): the same losses and weights."""
    make_config = request.getfixturevalue(make)
    config = make_config(train={"max_steps": 6})
    checkpointed = make_config(train={"max_steps": 6, "activation_checkpointing": True})
    train(config, run_dir=tmp_path / "plain", progress=False)
    train(checkpointed, run_dir=tmp_path / "recomputed", progress=False)
    assert train_losses(tmp_path / "recomputed") == train_losses(tmp_path / "plain")
    plain, recomputed = weights(tmp_path / "plain", 6), weights(tmp_path / "recomputed", 6)
    for name in plain:
        assert torch.equal(recomputed[name], plain[name]), name


def test_activation_checkpointing_runs_each_layer_again_in_the_backward(make_config, tmp_path):
    calls = {}
    for recompute in (False, True):
        config = make_config(train={"activation_checkpointing": recompute})
        trainer = Trainer(config, tmp_path / str(recompute), DistributedContext())
        seen = []
        for layer in transformer_layers(trainer.model):
            layer.feed_forward.register_forward_hook(lambda *_, seen=seen: seen.append(1))
        trainer.train_step([trainer.data.train.make_batch([0, 1, 2])])
        calls[recompute] = len(seen)
    assert calls == {False: 2, True: 4}  # 1 encoder + 1 decoder layer, forward (and again)


@pytest.mark.integration
def test_fsdp_follows_one_process_and_its_checkpoint_is_an_ordinary_one(make_config, tmp_path):
    """Four batches per update: accumulated in one process, two per process under FSDP. The
    checkpoint FSDP writes has the single-process layout, loads in one process and scores there
    exactly as the FSDP run's own validation scored the weights it had gathered."""
    config = make_config(
        model={"dropout": 0.0},
        data={"max_tokens": 256},
        train={"max_steps": 6, "eval_every": 3, "tokens_per_update": 1024, "strategy": "fsdp",
               "activation_checkpointing": True},
    )  # fmt: skip
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    train(config, run_dir=single, progress=False)
    save_config(config, tmp_path / "config.yaml")
    done = subprocess.run(torchrun(tmp_path / "config.yaml", sharded), cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cpu x2" in done.stdout
    held = int(done.stdout.split("fsdp: ")[1].split(" of the parameters")[0].replace(",", ""))
    total = sum(p.numel() for p in aiayn.load(single).model.parameters())
    assert total // 2 <= held < total  # a share of most matrices; a few bias rows round up

    for one, two in zip(train_losses(single), train_losses(sharded), strict=True):
        assert two == pytest.approx(one, rel=1e-5)
    one, two = weights(single, 6), weights(sharded, 6)
    assert one.keys() == two.keys()  # tied weights stored once, under the same name
    for name in one:
        if name.endswith("k_proj.bias"):  # zero gradient but for rounding noise (see DDP test)
            continue
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    saved = aiayn.load(sharded, "checkpoint-00000006").config
    model = build_model(saved.model)
    moments = load_optimizer_state(sharded / "checkpoint-00000006")["state"]
    params = list(model.parameters())
    assert len(moments) == len(params)
    for index, param in enumerate(params):  # whole moments, not one process's shard
        assert moments[index]["exp_avg"].shape == param.shape

    logged = [r for r in read_metrics(sharded) if r["kind"] == "valid" and r["step"] == 6]
    load_weights(model, sharded / "checkpoint-00000006")
    data = load_task_data(saved.data, sharded, DistributedContext(), max_len=64)
    # as many threads as each FSDP process had (the fixture's 1 on 2 cores, more on bigger
    # CPUs), so that the matrix products add up in the same order
    threads = int(re.search(r"(\d+) threads, torch", done.stdout).group(1))
    torch.set_num_threads(threads)
    again = validate(model, data, saved, device=torch.device("cpu"), autocast=nullcontext)
    record = again.record()
    for key in ("loss", "ppl", "bleu", "chrf"):
        assert record[key] == logged[0][key], key
    exported = aiayn.load(sharded, "checkpoint-00000006").export(tmp_path / "hf")
    assert (exported / "model.safetensors").is_file()


@pytest.mark.integration
def test_fsdp_resumes_bit_identical_after_sigkill(make_config, tmp_path):
    config = make_config(train={"max_steps": 30, "save_every": 4, "keep_last": 2,
                                "strategy": "fsdp"})  # fmt: skip
    save_config(config, tmp_path / "config.yaml")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(torchrun(tmp_path / "config.yaml", whole), cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    kill_at = random.Random().randint(6, 20)
    process = subprocess.Popen(torchrun(tmp_path / "config.yaml", killed, "--resume"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        steps = [r["step"] for r in read_metrics(killed) if r["kind"] == "train"]
        if steps and steps[-1] >= kill_at:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers at once
            break
        time.sleep(0.01)
    process.wait()
    assert latest_checkpoint(killed) is not None
    assert latest_checkpoint(killed).name != "checkpoint-00000030", "it finished before the kill"

    done = subprocess.run(torchrun(tmp_path / "config.yaml", killed, "--resume"), cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    one, two = weights(whole, 30), weights(killed, 30)
    for name in one:
        assert torch.equal(two[name], one[name]), name
    assert train_losses(killed) == train_losses(whole)
