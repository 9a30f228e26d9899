"""`aiayn train --dry-run`: the resolved plan of a run for any number of processes, printed
without reading data, training or writing anything."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.config import load_config
from aiayn.model.transformer import build_model
from aiayn.train.plan import ADAM_BYTES_PER_PARAMETER, plan_training

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("world_size", "accumulate"), [(1, 7), (2, 4), (8, 1), (16, 1)])
def test_the_paper_recipe_keeps_its_tokens_per_update_on_any_number_of_processes(
    world_size, accumulate
):
    config = load_config(CONFIGS / "paper-base-wmt14-en-de.yaml")
    plan = plan_training(config, world_size=world_size, device="cuda", precision="bf16")
    assert plan.accumulate == accumulate
    assert plan.tokens_per_update == 4096 * world_size * accumulate >= 28_672
    with torch.device("meta"):
        expected = sum(p.numel() for p in build_model(config.model).parameters())
    assert plan.parameters == expected and plan.updates == 100_000
    assert plan.state_gib == pytest.approx(expected * ADAM_BYTES_PER_PARAMETER / 2**30)
    peak = 512**-0.5 * 4000**-0.5  # Eq. 3 at step = warmup_steps
    assert f"peak lr {peak:.2e}" in plan.schedule and "every 1,500 updates (66 in all)" in str(plan)


def test_fp32_keeps_twice_the_layer_activations_of_bf16():
    config = load_config(CONFIGS / "multi30k-de-en.yaml")
    bf16, fp32 = (plan_training(config, world_size=1, device="cpu", precision=p).activation_gib
                  for p in ("bf16", "fp32"))  # fmt: skip
    logits = 4096 * 3 * 4 * 8000 / 2**30  # the same in both: fp32 over the vocabulary
    assert fp32 - logits == pytest.approx(2 * (bf16 - logits))
    with pytest.raises(ValueError, match="world size must be at least 1"):
        plan_training(config, world_size=0, device="cpu", precision="fp32")


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIAYN_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.chdir(tmp_path)
    main(["train", str(CONFIGS / "multi30k-de-en.yaml"), "--dry-run", "--world-size", "4",
          "--set", "train.tokens_per_update=32768"])  # fmt: skip
    out = capsys.readouterr().out
    assert "processes: 4 (world size)" in out
    assert "4,096 tokens per side and process, 2 per update -> 32,768" in out
    assert re.search(r"memory per process \(estimate\): [\d.]+ GiB", out)
    assert list(tmp_path.iterdir()) == []  # no run directory, no data fetched
    assert math.isfinite(float(re.search(r"([\d.]+) GiB", out).group(1)))


def test_world_size_without_dry_run_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", str(CONFIGS / "multi30k-de-en.yaml"), "--world-size", "4"])
    assert "--world-size plans a run (--dry-run)" in capsys.readouterr().err


def test_the_big_recipe_has_the_papers_parameter_count():
    config = load_config(CONFIGS / "paper-big-wmt14-en-de.yaml")
    plan = plan_training(config, world_size=8, device="cuda", precision="bf16")
    assert plan.parameters == pytest.approx(213e6, rel=0.01)  # Table 3, big: 213M
    assert plan.updates == 300_000 and "every 600 updates" in plan.checkpoints


def test_fsdp_divides_the_training_state_and_recomputation_the_activations():
    config = load_config(CONFIGS / "paper-big-wmt14-en-de.yaml")
    ddp = plan_training(config, world_size=8, device="cuda", precision="bf16")
    sharded = ["train.strategy=fsdp", "train.activation_checkpointing=true"]
    fsdp_config = load_config(CONFIGS / "paper-big-wmt14-en-de.yaml", sharded)
    fsdp = plan_training(fsdp_config, world_size=8, device="cuda", precision="bf16")
    attention, norm = 4 * 1024**2 + 4 * 1024, 2 * 1024
    feed_forward = 2 * 1024 * 4096 + 4096 + 1024
    decoder_layer = 2 * attention + feed_forward + 3 * norm  # the largest: cross-attention too
    expected = fsdp.parameters * ADAM_BYTES_PER_PARAMETER / 8 + decoder_layer * 8
    assert fsdp.state_gib == pytest.approx(expected / 2**30)
    assert fsdp.state_gib < ddp.state_gib / 5  # 1/8 of it, and one layer whole
    logits = 4096 * 3 * 4 * config.model.vocab_size / 2**30
    assert fsdp.activation_gib - logits < (ddp.activation_gib - logits) / 4
    assert "strategy fsdp, activation checkpointing" in str(fsdp)
    assert "Adam (sharded)" in str(fsdp) and "strategy ddp" in str(ddp)
    single = plan_training(fsdp_config, world_size=1, device="cuda", precision="bf16")
    assert single.strategy == "single" and single.state_gib == ddp.state_gib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.parametrize("launch", ["standalone", "rendezvous"])
def test_the_torchrun_command_lines_of_docs_scale_start_the_dry_run(launch):
    """The launcher flags docs/scale.md gives (single node; multi-node rendezvous on one node
    here), with the dry run as the job: every process plans, rank 0 prints."""
    if launch == "standalone":
        flags = ["--standalone"]
    else:
        flags = ["--nnodes", "1", "--rdzv_backend", "c10d", "--rdzv_id", "wmt14",
                 "--rdzv_endpoint", f"127.0.0.1:{free_port()}"]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", *flags, "--nproc_per_node", "2",
               "-m", "aiayn", "train", str(CONFIGS / "paper-big-wmt14-en-de.yaml"),
               "--dry-run"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("processes: 2 (world size)") == 1
    assert "4 per update -> 32,768 tokens per side and update" in result.stdout
