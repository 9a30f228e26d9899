"""Data parallelism: `torchrun --nproc_per_node=2 -m aiayn train` (gloo on CPU) follows the same
loss curve as one process accumulating the same global batch; only rank 0 writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aiayn.config import save_config
from aiayn.data.batching import TokenBatchSampler
from aiayn.train.distributed import DistributedContext, resolve_device
from aiayn.train.log import read_metrics
from aiayn.train.loop import train
from aiayn.train.task import load_task_data

REPO = Path(__file__).resolve().parents[2]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.integration
def test_two_processes_match_one_process_on_the_same_global_batch(make_config, tmp_path):
    # Two batches per update: accumulated in one process, one per process in two.
    tokens = 2 * 256
    config = make_config(
        model={"dropout": 0.0},
        data={"max_tokens": 256},
        train={"max_steps": 6, "bleu": False, "tokens_per_update": tokens},
    )
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    data = load_task_data(config.data, single, DistributedContext(), max_len=64)
    sampler = TokenBatchSampler(data.train.lengths, config.data.max_tokens, seed=0)
    assert len(sampler) % 2 == 0, "an odd batch count would split batches differently"

    train(config, run_dir=single, progress=False)

    save_config(config, tmp_path / "config.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "aiayn", "train", str(tmp_path / "config.yaml"),
               "--run-dir", str(ddp), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cpu x2" in done.stdout and done.stdout.count("encoder-decoder with") == 1

    ones, twos = ([r for r in read_metrics(d) if r["kind"] == "train"] for d in (single, ddp))
    assert [r["step"] for r in twos] == [1, 2, 3, 4, 5, 6]  # one writer
    for one, two in zip(ones, twos, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert two["tokens"] == one["tokens"]
    final = Path("checkpoint-00000006") / "model.safetensors"
    one = safetensors.torch.load_file(single / final)
    two = safetensors.torch.load_file(ddp / final)
    for name in one:
        if name.endswith("k_proj.bias"):
            # Softmax ignores a shift shared by all keys: this gradient is zero but for
            # rounding noise, which Adam scales up to +-lr whatever its sign.
            continue
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)


PROBE = """
import gc, sys
import torch.distributed as dist
from aiayn.config import load_config
from aiayn.train import loop

def teardown(**kwargs):
    alive = sum(type(o).__name__ == "DistributedDataParallel" for o in gc.get_objects())
    print(f"rank {dist.get_rank()}: {alive} DDP models alive at teardown", flush=True)
    teardown_distributed(**kwargs)

teardown_distributed, loop.teardown_distributed = loop.teardown_distributed, teardown
loop.train(load_config(sys.argv[1], []), run_dir=sys.argv[2], progress=False)
"""


@pytest.mark.integration
def test_the_ddp_model_is_freed_before_the_process_group_is_destroyed(make_config, tmp_path):
    # Freed after the group, DDP's reducer would destroy gloo's group with the GIL held while
    # a gloo thread waits for the GIL: a hang at exit about once in 40 runs on a busy machine.
    config = make_config(train={"max_steps": 2, "bleu": False})
    save_config(config, tmp_path / "config.yaml")
    (tmp_path / "probe.py").write_text(PROBE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(tmp_path / "probe.py"), str(tmp_path / "config.yaml"),
               str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: 0 DDP models alive at teardown" in done.stdout
