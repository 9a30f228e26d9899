"""The training loop: it learns (translation and language modelling alike), writes the run
directory contract, resumes bit-exactly after SIGKILL, accumulates gradients exactly, skips
non-finite updates and stops after too many."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aiayn.config import load_config, save_config
from aiayn.data.tokenizer import Tokenizer
from aiayn.machine import describe_machine
from aiayn.model import build_model
from aiayn.train.checkpoint import latest_checkpoint, list_checkpoints, load_model
from aiayn.train.distributed import DistributedContext
from aiayn.train.log import read_metrics
from aiayn.train.loop import NonFiniteLossError, Trainer, train
from aiayn.train.loss import TokenLoss, label_smoothed_cross_entropy

REPO = Path(__file__).resolve().parents[2]


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_translation_run_learns_and_fills_the_run_dir(make_config, tmp_path):
    config = make_config(train={"max_steps": 40, "eval_every": 15, "keep_last": 1})
    result = train(config, run_dir=tmp_path, progress=False)
    assert result.step == 40 and result.tokens_per_second > 0
    losses = train_losses(tmp_path)
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.yaml", "tokenizer.model", "metrics.jsonl", "checkpoint-00000040",
        "checkpoint-best",
    }  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000040"]  # keep_last 1
    valid = [r for r in read_metrics(tmp_path) if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [15, 20, 30, 40]  # every 15 and each epoch (20)
    assert valid[-1]["loss"] < valid[0]["loss"] and math.isfinite(valid[-1]["ppl"])
    assert "nrefs:1|case:mixed" in valid[-1]["bleu_signature"] and "chrf" in valid[-1]
    model, saved = load_model(tmp_path, "last")
    assert saved.model.vocab_size == Tokenizer.load(tmp_path / "tokenizer.model").vocab_size
    assert saved.model == model.config and not model.training
    assert load_config(tmp_path / "config.yaml") == saved


def test_the_last_update_is_validated_even_when_save_every_already_saved_it(make_config, tmp_path):
    """A `save_every` that divides `max_steps` saves the last update before the loop ends; it
    must still be validated, so that checkpoint-best can be the last update."""
    config = make_config(
        train={"max_steps": 12, "save_every": 6, "eval_every": 0, "eval_each_epoch": False,
               "keep_last": 5, "bleu": False}
    )  # fmt: skip
    train(config, run_dir=tmp_path, progress=False)
    valid = [r for r in read_metrics(tmp_path) if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [12]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-00000006", "checkpoint-00000012"
    ]  # fmt: skip
    best = (tmp_path / "checkpoint-best" / "trainer_state.json").read_text()
    assert json.loads(best)["step"] == 12


def test_language_model_trains_with_the_same_loop(make_lm_config, tmp_path):
    train(make_lm_config(train={"max_steps": 60}), run_dir=tmp_path, progress=False)
    losses = train_losses(tmp_path)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    valid = [r for r in read_metrics(tmp_path) if r["kind"] == "valid"][-1]
    assert "bleu" not in valid and valid["ppl"] == pytest.approx(math.exp(valid["nll"]))
    model, config = load_model(tmp_path)
    assert config.model.kind == "decoder-only" and type(model).__name__ == "LanguageModel"


def as_if(native_bf16: bool):
    """This machine's description, with native bf16 as given (so tests hold on every CPU)."""
    lacking = "this CPU has no native bf16, lacking AVX512-BF16 and AMX"
    reason = "this CPU has AMX_BF16" if native_bf16 else lacking
    machine = dataclasses.replace(
        describe_machine("cpu"), native_bf16=native_bf16, bf16_reason=reason
    )
    return lambda device: machine


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_follows_the_machine_and_the_run_keeps_request_and_result(
    make_config, tmp_path, monkeypatch, capsys, native
):
    monkeypatch.setattr("aiayn.train.loop.describe_machine", as_if(native))
    config = make_config(train={"max_steps": 6, "precision": "auto"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        train(config, run_dir=tmp_path / "auto", progress=False)
    expected = "bf16" if native else "fp32"
    saved = load_config(tmp_path / "auto" / "config.yaml").train
    assert (saved.precision, saved.resolved_precision) == ("auto", expected)
    header = capsys.readouterr().out
    assert "machine: " in header and f"precision {expected} (auto: this CPU has" in header
    machine = next(r for r in read_metrics(tmp_path / "auto") if r["kind"] == "machine")
    assert machine["precision"] == expected and machine["native_bf16"] is native
    # the same run with the precision given explicitly: the same losses, bit for bit
    explicit = make_config(train={"max_steps": 6, "precision": expected})
    train(explicit, run_dir=tmp_path / expected, progress=False)
    assert train_losses(tmp_path / "auto") == train_losses(tmp_path / expected)
    if native:  # and bf16 is really on: fp32 rounds differently
        fp32 = make_config(train={"max_steps": 6, "precision": "fp32"})
        train(fp32, run_dir=tmp_path / "fp32", progress=False)
        assert train_losses(tmp_path / "auto") != train_losses(tmp_path / "fp32")


def test_bf16_trains_and_warns_once_with_its_cost_where_it_is_not_native(
    make_config, tmp_path, monkeypatch
):
    monkeypatch.setattr("aiayn.train.loop.describe_machine", as_if(False))
    config = make_config(train={"max_steps": 20, "precision": "bf16"})
    with pytest.warns(UserWarning) as caught:
        train(config, run_dir=tmp_path, progress=False)
    assert len(caught) == 1
    assert re.search(
        r"bf16 but this CPU has no native bf16, lacking .*: a bf16 matrix multiply measured "
        r"\d+x slower than fp32 here; set train.precision=auto \(or fp32\)", str(caught[0].message)
    )  # fmt: skip
    losses = train_losses(tmp_path)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    monkeypatch.setattr("aiayn.train.loop.describe_machine", as_if(True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(config, run_dir=tmp_path / "native", progress=False)


def test_a_run_resumed_on_another_machine_says_its_precision_changed(
    make_config, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("aiayn.train.loop.describe_machine", as_if(True))
    train(make_config(train={"max_steps": 2, "precision": "auto"}), run_dir=tmp_path,
          progress=False)  # fmt: skip
    monkeypatch.setattr("aiayn.train.loop.describe_machine", as_if(False))
    config = make_config(train={"max_steps": 4, "precision": "auto"})
    train(config, run_dir=tmp_path, resume=True, progress=False)
    assert "changed setting: train.resolved_precision bf16 -> fp32" in capsys.readouterr().out
    assert load_config(tmp_path / "config.yaml").train.resolved_precision == "fp32"
    machines = [r for r in read_metrics(tmp_path) if r["kind"] == "machine"]
    assert [(r["at_step"], r["precision"]) for r in machines] == [(0, "bf16"), (2, "fp32")]


def test_fp16_needs_a_gpu(make_config, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(make_config(train={"precision": "fp16"}), run_dir=tmp_path, progress=False)


def start(config_file: Path, run_dir: Path, *, module: str = "aiayn") -> subprocess.Popen:
    """`aiayn train --resume` (from scratch when there is nothing to resume) in a process."""
    command = [sys.executable, "-m", module, "train", str(config_file), "--run-dir",
               str(run_dir), "--resume", "--no-progress"]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def logged_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if r.get("kind") == "train"]


def kill_when(process: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL `process` as soon as `ready()` holds; fail if it ends first."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.kill()
            break
        time.sleep(0.002)
    assert process.wait() == -signal.SIGKILL, f"the run ended before the kill ({what})"


def resume_and_check(config, run_dir: Path, whole: Path, capsys) -> None:
    """Resume in this process: it must start from the latest checkpoint (its line and its
    machine record say so) and end bit-identical to the uninterrupted run."""
    latest = latest_checkpoint(run_dir)
    capsys.readouterr()
    train(config, run_dir=run_dir, resume=True, progress=False)
    out = capsys.readouterr().out
    if latest is None:
        assert "starting from scratch" in out
    else:
        step = int(latest.name.removeprefix("checkpoint-"))
        assert f"resumed from {latest} (update {step}," in out
        assert [r["at_step"] for r in read_metrics(run_dir) if r["kind"] == "machine"][-1] == step
    final = Path("checkpoint-00000100") / "model.safetensors"
    whole_weights = safetensors.torch.load_file(whole / final)
    resumed = safetensors.torch.load_file(run_dir / final)
    assert whole_weights.keys() == resumed.keys()
    for name in whole_weights:
        assert torch.equal(whole_weights[name], resumed[name]), f"{name} differs"
    assert train_losses(run_dir) == train_losses(whole)  # the log reads as one run


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["translation", "language-model"])
def test_resume_after_sigkill_ends_bit_identical(kind, request, tmp_path, capsys):
    make = request.getfixturevalue("make_config" if kind == "translation" else "make_lm_config")
    config = make(train={"max_steps": 100, "save_every": 5, "keep_last": 2})
    train(config, run_dir=tmp_path / "whole", progress=False)

    kill_at = random.Random().randint(10, 60)  # a different step each run
    save_config(config, tmp_path / "config.yaml")
    run_dir = tmp_path / "killed"
    process = start(tmp_path / "config.yaml", run_dir)
    kill_when(process, lambda: logged_steps(run_dir)[-1:] >= [kill_at], f"update {kill_at}")
    assert latest_checkpoint(run_dir).name != "checkpoint-00000100"
    resume_and_check(config, run_dir, tmp_path / "whole", capsys)


@pytest.mark.integration
def test_a_sigkill_in_the_middle_of_a_checkpoint_write_resumes_from_the_one_before(
    make_config, tmp_path, capsys
):
    config = make_config(train={"max_steps": 100, "save_every": 5, "keep_last": 2})
    train(config, run_dir=tmp_path / "whole", progress=False)
    save_config(config, tmp_path / "config.yaml")
    run_dir = tmp_path / "killed"
    process = start(tmp_path / "config.yaml", run_dir, module="tests.train.slow_save")
    marker = run_dir / "SAVING"
    # the third write: checkpoint-00000015 (5 and 10 went before it)
    kill_when(process, lambda: marker.exists() and marker.read_text().endswith("15"), "a write")
    half = run_dir / ".tmp-checkpoint-00000015"
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()
    assert latest_checkpoint(run_dir).name == "checkpoint-00000010"
    resume_and_check(config, run_dir, tmp_path / "whole", capsys)
    assert not half.exists()


@pytest.mark.slow
@pytest.mark.integration
def test_soak_five_sigkills_at_random_moments_end_bit_identical(make_config, tmp_path, capsys):
    """One run killed 5 times, each at a random moment after a random number of further
    updates (inside an update, a save, a validation, a log write), resumed each time."""
    config = make_config(train={"max_steps": 100, "save_every": 3, "eval_every": 20,
                                "keep_last": 2})  # fmt: skip
    train(config, run_dir=tmp_path / "whole", progress=False)
    save_config(config, tmp_path / "config.yaml")
    run_dir, rng = tmp_path / "killed", random.Random()
    kills = []
    for _ in range(5):
        target = (logged_steps(run_dir)[-1:] or [0])[0] + rng.randint(1, 15)
        process = start(tmp_path / "config.yaml", run_dir)

        def ready(target: int = target, delay: float = rng.uniform(0.0, 0.05)) -> bool:
            if logged_steps(run_dir)[-1:] < [target]:
                return False
            time.sleep(delay)  # then anywhere: the update, a save, a validation, the log
            return True

        kill_when(process, ready, f"update {target}")
        kills.append(logged_steps(run_dir)[-1])
    assert kills[-1] < 100, f"the run finished before its last kill: killed at {kills}"
    resume_and_check(config, run_dir, tmp_path / "whole", capsys)


def test_gradient_accumulation_is_the_gradient_of_the_token_mean(make_config, tmp_path):
    """Two accumulated batches give the gradient of one loss averaged over all their tokens."""
    config = make_config(model={"dropout": 0.0}, train={"tokens_per_update": 512, "clip_norm": 0.5})
    trainer = Trainer(config, tmp_path, DistributedContext())
    assert trainer.accumulate == 2
    reference = build_model(trainer.config.model)
    reference.load_state_dict(trainer.model.state_dict())
    seen = []
    trainer.optimizer.step = lambda: seen.extend(p.grad.clone() for p in trainer.model.parameters())
    batches = [trainer.data.train.make_batch(ix) for ix in ([0, 1, 2], [3, 4, 5, 6, 7])]
    update = trainer.train_step(batches)

    total, tokens = 0.0, 0
    for batch in batches:
        logits = reference(batch.src, batch.tgt_in, batch.src_valid, batch.tgt_valid)
        out = label_smoothed_cross_entropy(logits, batch.tgt_out, epsilon=0.1, ignore_index=0)
        total, tokens = total + out.loss, tokens + int(out.n_tokens)
    (total / tokens).backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    assert update.loss == pytest.approx((total / tokens).item(), rel=1e-6)
    assert update.grad_norm == pytest.approx(float(norm), rel=1e-5) and norm > 0.5
    expected = [p.grad for p in reference.parameters()]
    assert len(seen) == len(expected)
    for got, want in zip(seen, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_a_non_finite_loss_skips_the_update(make_config, tmp_path, monkeypatch):
    calls = []

    def sometimes_nan(logits, target, **kwargs):
        out = label_smoothed_cross_entropy(logits, target, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # the third update
            return TokenLoss(out.loss * math.nan, out.nll * math.nan, out.n_tokens)
        return out

    monkeypatch.setattr("aiayn.train.loss.label_smoothed_cross_entropy", sometimes_nan)
    result = train(make_config(train={"max_steps": 5}), run_dir=tmp_path, progress=False)
    records = [r for r in read_metrics(tmp_path) if r["kind"] in ("train", "nonfinite")]
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 1), ("train", 2), ("nonfinite", 2), ("train", 3), ("train", 4), ("train", 5)
    ]  # fmt: skip
    assert result.step == 5 and all(math.isfinite(r["loss"]) for r in records[3:])


def test_too_many_non_finite_updates_stop_the_run(make_config, tmp_path, monkeypatch):
    first = make_config(train={"max_steps": 8, "save_every": 4})
    train(first, run_dir=tmp_path, progress=False)
    config = make_config(train={"max_steps": 30, "save_every": 4, "max_nonfinite": 3})

    def always_nan(logits, target, **kwargs):
        out = label_smoothed_cross_entropy(logits, target, **kwargs)
        return TokenLoss(out.loss + math.inf, out.nll, out.n_tokens)

    monkeypatch.setattr("aiayn.train.loss.label_smoothed_cross_entropy", always_nan)
    with pytest.raises(NonFiniteLossError, match=r"3 updates in a row .*checkpoint-00000008"):
        train(config, run_dir=tmp_path, resume=True, progress=False)
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000008"
    load_model(tmp_path, "last")


def test_a_run_dir_with_checkpoints_needs_resume(make_config, tmp_path):
    config = make_config(train={"max_steps": 2})
    train(config, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints .* --resume"):
        train(config, run_dir=tmp_path, progress=False)
    changed = make_config(train={"max_steps": 2}, model={"d_ff": 48})
    with pytest.raises(ValueError, match="model.d_ff"):
        train(changed, run_dir=tmp_path, resume=True, progress=False)
