"""SIGTERM and SIGINT: the first finishes the update, saves and returns (a validation under way is
dropped and redone on resume), a second stops at once with the last complete checkpoint intact;
each resumed run ends bit-identical to one never stopped. The signals are sent by the process to
itself at a chosen point (inside an update, a validation, a save), so every case is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aiayn.config import save_config
from aiayn.train import checkpoint, loop
from aiayn.train.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
)
from aiayn.train.log import read_metrics
from aiayn.train.loop import Trainer, train
from aiayn.train.stop import Stopped

REPO = Path(__file__).resolve().parents[2]
STEPS = 24
SECTIONS = {"train": {"max_steps": STEPS, "save_every": 5, "eval_every": 8, "keep_last": 3}}


@pytest.fixture(scope="module")
def whole(tmp_path_factory, corpus) -> Path:
    """The run never stopped."""
    from tests.train.tiny_data import tiny_config

    run_dir = tmp_path_factory.mktemp("whole")
    torch.set_num_threads(1)
    train(tiny_config(corpus, **SECTIONS), run_dir=run_dir, progress=False)
    return run_dir


def assert_same_end(run_dir: Path, whole: Path) -> None:
    """Bit-identical final weights, and a log that reads as the uninterrupted run's."""
    final = Path(f"checkpoint-{STEPS:08d}") / "model.safetensors"
    a = safetensors.torch.load_file(whole / final)
    b = safetensors.torch.load_file(run_dir / final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def records(path: Path, kind: str) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in ("seconds", "tokens_per_second")}
            for r in read_metrics(path)
            if r["kind"] == kind
        ]

    assert records(run_dir, "train") == records(whole, "train")
    assert [r["step"] for r in records(run_dir, "valid")] == [
        r["step"] for r in records(whole, "valid")
    ]
    assert [r["loss"] for r in records(run_dir, "valid")] == [
        r["loss"] for r in records(whole, "valid")
    ]


def signal_at(monkeypatch, owner, name: str, call: int, signum=signal.SIGTERM) -> None:
    """Send `signum` to this process as the `call`-th call of `owner.name` begins."""
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_an_update_finishes_it_saves_and_resume_is_bit_identical(
    signum, make_config, whole, tmp_path, monkeypatch, capsys
):
    config = make_config(**SECTIONS)
    before = signal.getsignal(signum)  # SIG_IGN for SIGINT under `nohup ... &`
    signal_at(monkeypatch, Trainer, "train_step", call=7, signum=signum)
    result = train(config, run_dir=tmp_path, progress=False)
    assert result.stopped_by == signal.Signals(signum).name and result.step == 7
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000007"  # the update was kept
    out = capsys.readouterr().out
    assert (
        f"stopped by {signal.Signals(signum).name} after update 7: saved "
        f"{tmp_path / 'checkpoint-00000007'}; continue with: aiayn train --resume --run-dir "
        f"{tmp_path}" in out
    )
    assert signal.getsignal(signum) == before  # restored
    monkeypatch.undo()
    train(config, run_dir=tmp_path, resume=True, progress=False)
    assert f"resumed from {tmp_path / 'checkpoint-00000007'} (update 7" in capsys.readouterr().out
    assert_same_end(tmp_path, whole)


def test_a_signal_during_validation_drops_it_and_the_resumed_run_redoes_it_first(
    make_config, whole, tmp_path, monkeypatch, capsys
):
    config = make_config(**SECTIONS)
    signal_at(monkeypatch, loop, "validate", call=2)  # the validation of update 16
    result = train(config, run_dir=tmp_path, progress=False)
    assert result.stopped_by == "SIGTERM" and result.step == 16
    assert "SIGTERM during the validation of update 16: dropped" in capsys.readouterr().out
    assert load_trainer_state(tmp_path / "checkpoint-00000016").pending_validation
    assert [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "valid"] == [8]
    monkeypatch.undo()
    train(config, run_dir=tmp_path, resume=True, progress=False)
    assert not load_trainer_state(tmp_path / "checkpoint-00000016").pending_validation
    assert_same_end(tmp_path, whole)


def test_a_signal_during_the_last_update_saves_and_the_final_validation_follows_on_resume(
    make_config, whole, tmp_path, monkeypatch
):
    config = make_config(**SECTIONS)
    signal_at(monkeypatch, Trainer, "train_step", call=STEPS)
    result = train(config, run_dir=tmp_path, progress=False)
    assert result.stopped_by == "SIGTERM" and result.step == STEPS
    assert load_trainer_state(tmp_path / f"checkpoint-{STEPS:08d}").pending_validation
    monkeypatch.undo()
    train(config, run_dir=tmp_path, resume=True, progress=False)
    assert_same_end(tmp_path, whole)


def test_a_second_signal_during_the_save_stops_at_once_and_the_last_checkpoint_is_intact(
    make_config, whole, tmp_path, monkeypatch
):
    config = make_config(**SECTIONS)
    signal_at(monkeypatch, Trainer, "train_step", call=12)  # first: save after update 12 ...
    real_write, stopping = checkpoint._save_weights, []

    def write_and_signal(model, file):  # ... and the second while its weights are written
        real_write(model, file)
        if file.parent.name == ".tmp-checkpoint-00000012":
            stopping.append(file)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint, "_save_weights", write_and_signal)
    with pytest.raises(Stopped) as stopped:
        train(config, run_dir=tmp_path, progress=False)
    assert stopped.value.at_once and stopped.value.exit_code == 128 + signal.SIGTERM
    assert (
        f"stopped at once by a second SIGTERM; the last complete checkpoint is "
        f"{tmp_path / 'checkpoint-00000010'}" in stopped.value.message
    )
    assert stopping and [p.name for p in list_checkpoints(tmp_path)][-1] == "checkpoint-00000010"
    assert not (tmp_path / ".tmp-checkpoint-00000012").exists()  # removed on the way out
    monkeypatch.undo()
    train(config, run_dir=tmp_path, resume=True, progress=False)
    assert_same_end(tmp_path, whole)


def test_a_signal_while_setting_up_stops_before_any_update(make_config, tmp_path, monkeypatch):
    signal_at(monkeypatch, loop, "load_task_data", call=1)
    with pytest.raises(Stopped) as stopped:
        train(make_config(**SECTIONS), run_dir=tmp_path, progress=False)
    assert not stopped.value.at_once and stopped.value.exit_code == 0
    assert "while setting up, before any update; nothing to save" in stopped.value.message
    assert list_checkpoints(tmp_path) == []


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "aiayn", "train", *args, "--no-progress"]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_for_step(run_dir: Path, process: subprocess.Popen, step: int) -> int:
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        steps = [r["step"] for r in read_metrics(run_dir) if r.get("kind") == "train"]
        if steps and steps[-1] >= step:
            return steps[-1]
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before update {step}")


@pytest.mark.integration
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_the_command_saves_on_a_signal_says_how_to_resume_and_exits(
    signum, code, make_config, tmp_path
):
    config = make_config(train={"max_steps": 100_000, "save_every": 0, "eval_every": 0,
                                "eval_each_epoch": False})  # fmt: skip
    save_config(config, tmp_path / "config.yaml")
    run_dir = tmp_path / "run"
    process = run_cli([str(tmp_path / "config.yaml"), "--run-dir", str(run_dir)])
    seen = wait_for_step(run_dir, process, 5)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err[-2000:]
    last = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"][-1]
    assert last >= seen and checkpoint_step(latest_checkpoint(run_dir)) == last
    name = signal.Signals(signum).name
    assert f"stopped by {name} after update {last}: saved {run_dir}" in out
    assert f"aiayn train --resume --run-dir {run_dir}" in out and "Traceback" not in err


@pytest.mark.integration
def test_under_torchrun_every_rank_stops_after_the_same_update_and_rank_0_saves(
    make_config, tmp_path
):
    config = make_config(
        data={"max_tokens": 256},
        train={"max_steps": 100_000, "save_every": 0, "eval_every": 0, "eval_each_epoch": False,
               "bleu": False},
    )  # fmt: skip
    save_config(config, tmp_path / "config.yaml")
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "aiayn", "train", str(tmp_path / "config.yaml"),
               "--run-dir", str(run_dir), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_step(run_dir, process, 3)
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    out, err = process.communicate(timeout=120)
    last = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"][-1]
    assert checkpoint_step(latest_checkpoint(run_dir)) == last, err[-3000:]
    assert f"stopped by SIGTERM after update {last}" in out and out.count("stopped by") == 1
    state = load_trainer_state(latest_checkpoint(run_dir))
    assert len(state.rng) == 2  # both ranks reached the save together
