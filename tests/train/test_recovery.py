"""A broken checkpoint (not safetensors, truncated, missing tensors, bad optimizer state, bad
JSON) is named in one line, and resume falls back to the newest one that loads; a full disk
during a save loses nothing; files are flushed to disk before they are renamed into place."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aiayn import load
from aiayn.cli import main
from aiayn.train import checkpoint
from aiayn.train.average import average_checkpoints
from aiayn.train.checkpoint import (
    CheckpointError,
    TrainerState,
    clean_run_dir,
    list_checkpoints,
    load_model,
    prune_checkpoints,
    save_checkpoint,
)
from aiayn.train.log import MetricsLog, read_metrics
from aiayn.train.loop import CheckpointWriteError, train

SECTIONS = {"train": {"max_steps": 15, "save_every": 5, "keep_last": 5, "bleu": False}}


class Payload:
    """What a planted pickle would run."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/aiayn-pwned",))


def not_safetensors(file: Path) -> None:
    file.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 10)


def truncated(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def missing_tensor(file: Path) -> None:
    tensors = safetensors.torch.load_file(file)
    tensors.pop(sorted(tensors)[0])
    safetensors.torch.save_file(tensors, file)


def pickled_payload(file: Path) -> None:
    torch.save({"state": Payload(), "param_groups": []}, file)


def bad_json(file: Path) -> None:
    file.write_text('{"step": 10, "sampler": {"epo')


def not_a_state(file: Path) -> None:
    file.write_text('["a list"]')


def wrong_optimizer(file: Path) -> None:
    torch.save({"state": {}, "param_groups": [{"params": [0, 1]}]}, file)


BREAKAGES = [
    ("model.safetensors", not_safetensors, "truncated or not a safetensors file"),
    ("model.safetensors", truncated, "truncated or not a safetensors file"),
    ("model.safetensors", missing_tensor, "does not fit the model: missing"),
    ("optimizer.pt", pickled_payload, "it holds Python objects, which would run code"),
    ("optimizer.pt", truncated, "truncated or not a torch file"),
    ("optimizer.pt", wrong_optimizer, "does not fit the model's optimizer"),
    ("trainer_state.json", bad_json, "not a trainer state"),
    ("trainer_state.json", not_a_state, "not a trainer state"),
]


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """A run stopped after 10 updates (checkpoints 5 and 10), and the same run done to 15."""
    from tests.train.tiny_data import tiny_config

    root = tmp_path_factory.mktemp("recovery")
    torch.set_num_threads(1)
    config = tiny_config(corpus, **SECTIONS)
    stopped_early = config.replace(train=dataclasses.replace(config.train, max_steps=10))
    train(stopped_early, run_dir=root / "ten", progress=False)
    train(config, run_dir=root / "whole", progress=False)
    return root / "ten", root / "whole"


@pytest.mark.parametrize(
    ("name", "breakage", "reason"), BREAKAGES, ids=lambda x: getattr(x, "__name__", x)
)
def test_resume_skips_a_checkpoint_that_does_not_load_naming_file_and_fault(
    name, breakage, reason, ten_steps, make_config, tmp_path
):
    ten, whole = ten_steps
    run_dir = tmp_path / "run"
    shutil.copytree(ten, run_dir)
    broken = run_dir / "checkpoint-00000010" / name
    breakage(broken)
    with pytest.warns(UserWarning) as caught:
        train(make_config(**SECTIONS), run_dir=run_dir, resume=True, progress=False)
    message = str(caught[0].message)
    assert message.startswith(f"skipped checkpoint-00000010, which does not load: {broken}")
    assert reason in message and "\n" not in message
    assert message.endswith(
        "moved to checkpoint-00000010.broken; resuming from checkpoint-00000005"
    )
    assert not Path("/tmp/aiayn-pwned").exists()
    assert (run_dir / "checkpoint-00000010.broken" / name).is_file()  # kept for a look
    # and from update 5 it ends where the run that was never broken ended, bit for bit
    final = Path("checkpoint-00000015") / "model.safetensors"
    a, b = (safetensors.torch.load_file(d / final) for d in (whole, run_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)
    machines = [r["at_step"] for r in read_metrics(run_dir) if r["kind"] == "machine"]
    assert machines == [0, 5]


def test_resume_with_no_checkpoint_that_loads_is_one_error_naming_them(ten_steps, make_config,
                                                                        tmp_path):  # fmt: skip
    run_dir = tmp_path / "run"
    shutil.copytree(ten_steps[0], run_dir)
    for path in list_checkpoints(run_dir):
        not_safetensors(path / "model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"none of the 2 checkpoints in .* loads \(newest: "
        r".*checkpoint-00000010/model.safetensors: truncated or not a safetensors",
    ):
        train(make_config(**SECTIONS), run_dir=run_dir, resume=True, progress=False)


@pytest.mark.parametrize(
    ("command", "reads"),
    [
        (["translate", "{run}"], "checkpoint-best"),
        (["evaluate", "{run}", "--split", "valid"], "checkpoint-best"),
        (["export", "{run}", "-o", "{tmp}/export"], "checkpoint-best"),
        (["average", "{run}", "--last", "2"], "checkpoint-00000010"),  # the newest of the two
    ],
    ids=["translate", "evaluate", "export", "average"],
)
def test_commands_name_a_broken_weights_file_in_one_line(
    command, reads, ten_steps, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(ten_steps[0], run_dir)
    broken = run_dir / reads
    truncated(broken / "model.safetensors")
    args = [a.format(run=run_dir, tmp=tmp_path) for a in command]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"aiayn {command[0]}: error: {broken / 'model.safetensors'}: truncated")


def test_the_api_names_broken_files(ten_steps, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ten_steps[0], run_dir)
    not_safetensors(run_dir / "checkpoint-00000010" / "model.safetensors")
    not_safetensors(run_dir / "checkpoint-best" / "model.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint-best/model.safetensors: truncated"):
        load(run_dir)
    with pytest.raises(CheckpointError, match="checkpoint-00000010/model.safetensors: truncated"):
        load(run_dir, "last")
    (run_dir / "tokenizer.model").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="tokenizer.model: not a SentencePiece model"):
        load(run_dir, "checkpoint-00000005")
    with pytest.raises(FileNotFoundError, match="is not a run directory: it has no config.yaml"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint-00000010/model.safetensors: truncated"):
        average_checkpoints(run_dir)


def test_a_full_disk_during_a_save_loses_nothing_and_names_the_run_dir(
    make_config, tmp_path, monkeypatch, capsys
):
    real, calls = checkpoint._save_weights, []

    def disk_full_at_the_third(model, file):
        calls.append(file)
        real(model, file)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_save_weights", disk_full_at_the_third)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as error:
        train(make_config(**SECTIONS), run_dir=run_dir, progress=False)
    assert str(error.value) == (
        f"could not write checkpoint-00000015 in {run_dir}: No space left on device; the "
        "checkpoints before it are intact (latest: checkpoint-00000010); make room, then "
        f"continue with: aiayn train --resume --run-dir {run_dir}"
    )
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-00000005",
                                                           "checkpoint-00000010"]  # fmt: skip
    for path in list_checkpoints(run_dir):
        load_model(run_dir, str(path))
    # the command line says the same in one line
    monkeypatch.setattr(checkpoint, "_save_weights", disk_full_at_the_third)
    calls.clear()
    config_file = tmp_path / "c.yaml"
    from aiayn.config import save_config

    save_config(make_config(**SECTIONS), config_file)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(config_file), "--run-dir", str(tmp_path / "cli"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"aiayn train: error: could not write checkpoint-00000015 in {tmp_path}")


def test_files_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    final = tmp_path / "checkpoint-00000001"
    save_checkpoint(
        final,
        model,
        TrainerState(step=1),
        optimizer_state=optimizer.state_dict(),
        scheduler={"a": 1},
    )
    tmp = tmp_path / ".tmp-checkpoint-00000001"
    rename = events.index(("rename", str(tmp), str(final)))
    flushed = {path for kind, path, *_ in events[:rename] if kind == "fsync"}
    files = {"model.safetensors", "optimizer.pt", "scheduler.json", "trainer_state.json"}
    assert flushed == {str(tmp / f) for f in files} | {str(tmp)}
    assert ("fsync", str(tmp_path)) in events[rename:]  # the new name itself is durable


def test_pruning_never_leaves_a_listed_half_deleted_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / f"checkpoint-{step:08d}", model, TrainerState(step=step))

    def killed_half_way(path, *args, **kwargs):
        (Path(path) / "model.safetensors").unlink()
        raise KeyboardInterrupt  # stands for the kill

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoints(tmp_path, keep_last=1)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000002",
                                                            "checkpoint-00000003"]  # fmt: skip
    for path in list_checkpoints(tmp_path):
        assert (path / "model.safetensors").is_file()
    clean_run_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000002",
                                                          "checkpoint-00000003"]  # fmt: skip


def test_the_metrics_log_is_rewritten_atomically_on_resume(tmp_path, monkeypatch):
    records = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 9)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        MetricsLog(tmp_path, resume_step=4)
    monkeypatch.undo()
    assert read_metrics(tmp_path) == records  # nothing lost
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left
    MetricsLog(tmp_path, resume_step=4).close()
    assert read_metrics(tmp_path) == records[:4]
