"""metrics.jsonl: appended records, a line cut by a kill skipped, truncation on resume, plots."""

from __future__ import annotations

import pytest

from aiayn.train.log import MetricsLog, plot_run, read_metrics


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.append("train", {"step": step, "loss": 5.0 - step})
    log.append("valid", {"step": 5, "loss": 1.0, "bleu": 12.5})
    with (tmp_path / "metrics.jsonl").open("a") as out:
        out.write('{"kind": "train", "st')  # killed mid-line
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 5]
    MetricsLog(tmp_path, resume_step=3)
    assert [(r["kind"], r["step"]) for r in read_metrics(tmp_path)] == [
        ("train", 1), ("train", 2), ("train", 3)
    ]  # fmt: skip
    MetricsLog(tmp_path)  # a new run starts a new log
    assert read_metrics(tmp_path) == []


def test_other_ranks_write_nothing(tmp_path):
    MetricsLog(tmp_path, enabled=False).append("train", {"step": 1})
    assert not (tmp_path / "metrics.jsonl").exists()


def test_plot_run_draws_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    log = MetricsLog(tmp_path)
    for step in range(1, 11):
        log.append("train", {"step": step, "loss": 10 / step, "lr": step * 1e-4})
    log.append("valid", {"step": 10, "loss": 2.0, "bleu": 3.0, "chrf": 20.0})
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png", "bleu.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    with pytest.raises(FileNotFoundError, match="no metrics"):
        plot_run(tmp_path / "elsewhere")


def test_tensorboard_event_files_when_installed(tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install .[tensorboard]")
    log = MetricsLog(tmp_path)
    log.append("train", {"step": 1, "loss": 2.0, "bleu_signature": "not a number"})
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
