"""`aiayn train`, `aiayn average`, `aiayn plot`: thin adapters over the library, with errors
printed as one line naming the problem."""

from __future__ import annotations

import pytest
import torch

from aiayn.cli import main
from aiayn.config import save_config
from aiayn.train.checkpoint import list_checkpoints, load_model
from aiayn.train.log import read_metrics
from tests.train.tiny_data import tiny_config, write_corpus


@pytest.fixture
def config_file(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a d_model 16 model only waits for a second thread
    corpus = write_corpus(tmp_path)
    config = tiny_config(corpus, train={"max_steps": 6, "save_every": 2, "bleu": False})
    yield save_config(config, tmp_path / "tiny.yaml")
    torch.set_num_threads(threads)


def test_train_resume_average_plot(config_file, tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", str(config_file), "--run-dir", str(run), "--no-progress",
          "--set", "train.max_steps=4", "model.dropout=0.0"])  # fmt: skip
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "train"] == [1, 2, 3, 4]
    _, config = load_model(run)
    assert config.train.max_steps == 4 and config.model.dropout == 0.0
    main(["train", "--resume", "--run-dir", str(run), "--no-progress", "--set",
          "train.max_steps=6"])  # fmt: skip
    assert "resumed from" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(run)][-1] == "checkpoint-00000006"

    main(["average", str(run), "--last", "2"])
    assert f"wrote {run / 'averaged' / 'model.safetensors'}" in capsys.readouterr().out
    load_model(run, "averaged")
    pytest.importorskip("matplotlib")
    main(["plot", str(run)])
    assert "loss.png" in capsys.readouterr().out and (run / "plots" / "lr.png").is_file()


def test_train_errors_are_one_line(config_file, tmp_path, capsys):
    run = str(tmp_path / "r")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(config_file), "--run-dir", run, "--set", "train.max_stpes=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "aiayn train: error: --set train.max_stpes=3: unknown key train.max_stpes"
    )
    assert "did you mean 'max_steps'?" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["train", "--no-progress"])
    assert "give a CONFIG, or --resume with --run-dir" in capsys.readouterr().err


def test_a_data_dir_that_does_not_exist_is_named_and_nothing_is_created(config_file, tmp_path,
                                                                          capsys):  # fmt: skip
    typo = tmp_path / "dtaa"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(config_file), "--run-dir", str(tmp_path / "r"), "--set",
              "data.dataset=multi30k", f"data.data_dir={typo}"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"aiayn train: error: data.data_dir (--data-dir) {typo} does not exist")
    assert not typo.exists()
