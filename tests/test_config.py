"""Run configs: YAML round trips, errors that name file, dotted key and allowed values, dotted
overrides, and the shipped configs/*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiayn.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_override,
    config_from_dict,
    load_config,
    save_config,
)
from aiayn.generate.options import DecodeOptions
from aiayn.model import ModelConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_save_then_load_gives_the_same_config(tmp_path):
    config = RunConfig(
        model=ModelConfig(d_model=64, n_heads=4, max_len=128),
        data=DataConfig(dataset="parallel", train_files=("a.de", "a.en"),
                        valid_files=("b.de", "b.en"), bucket_size=100),
        train=TrainConfig(betas=(0.9, 0.997), precision="bf16", max_epochs=3),
        decode=DecodeOptions(beam=5, seed=7),
    )  # fmt: skip
    assert load_config(save_config(config, tmp_path / "c.yaml")) == config


def test_missing_keys_take_defaults(tmp_path):
    config = load_config(write(tmp_path, "train:\n  max_steps: 7\n"))
    assert config.train.max_steps == 7 and config.train.warmup_steps == 4000
    assert config.model == ModelConfig() and config.decode == DecodeOptions()
    assert load_config(write(tmp_path, "")) == RunConfig()


def test_an_unknown_key_names_file_key_and_a_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  warmup_step: 100\n")
    with pytest.raises(ValueError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "train.warmup_step" in message
    assert "did you mean 'warmup_steps'?" in message and "allowed: seed, max_steps" in message
    with pytest.raises(ValueError, match=r"unknown key modle; did you mean 'model'"):
        load_config(write(tmp_path, "modle:\n  d_model: 8\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  precision: bf32\n", r"train.precision: 'bf32' is not one of 'auto', 'fp32'"),
        ("model:\n  d_model: wide\n", r"model.d_model: expected int, got 'wide'"),
        ("model:\n  dropout: true\n", r"model.dropout: expected float, got True"),
        ("train:\n  betas: [0.9]\n", r"train.betas: expected 2 values"),
        ("data:\n  max_tokens: 1.5\n", r"data.max_tokens: expected int, got 1.5"),
        ("train: 3\n", r"train: expected a mapping"),
        ("model:\n  d_model: 30\n  n_heads: 4\n", r"model: d_model \(30\) must be divisible"),
        ("data:\n  dataset: tinyshakespeare\n", r"needs model.kind 'decoder-only'"),
        ("train: [unclosed\n", r"not valid YAML"),
    ],
)
def test_wrong_values_are_errors_naming_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=expected) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_numbers_are_read_as_their_field_type(tmp_path):
    config = load_config(write(tmp_path, "train:\n  lr: 1e-3\n  adam_eps: 1\n"))
    assert config.train.lr == 0.001 and isinstance(config.train.adam_eps, float)
    assert config.train.betas == (0.9, 0.98)


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, "train:\n  max_steps: 7\n")
    config = load_config(
        path, ["train.max_steps=20", "model.dropout=0.3", "train.lr=5e-4", "data.tokenizer="]
    )
    assert config.train.max_steps == 20 and config.model.dropout == 0.3
    assert config.train.lr == 5e-4 and config.data.tokenizer is None
    with pytest.raises(ValueError, match="train.max_stpes"):
        load_config(path, ["train.max_stpes=3"])
    with pytest.raises(ValueError, match="not of the form section.key=value"):
        apply_override({}, "train.max_steps")
    with pytest.raises(ValueError, match="'max_steps' is not a section"):
        apply_override({"train": {"max_steps": 3}}, "train.max_steps.x=1")


def test_data_files_must_fit_the_dataset():
    with pytest.raises(ValueError, match="needs 2 train_files"):
        DataConfig(dataset="parallel", train_files=("only-one",), valid_files=("a", "b"))
    with pytest.raises(ValueError, match=r"data.max_len \(300\) exceeds model.max_len \(256\)"):
        config_from_dict({"model": {"max_len": 256}, "data": {"max_len": 300}})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.model.kind == ("encoder-decoder" if config.data.translation else "decoder-only")


def test_the_shipped_configs_are_all_there():
    assert {p.name for p in CONFIGS.glob("*.yaml")} >= {
        "multi30k-de-en.yaml", "multi30k-en-de.yaml", "tinyshakespeare-char.yaml",
        "paper-base-wmt14-en-de.yaml",
    }  # fmt: skip
    paper = load_config(CONFIGS / "paper-base-wmt14-en-de.yaml")
    assert paper.model == ModelConfig.preset("paper-base").replace(vocab_size=37000)
    assert (paper.train.warmup_steps, paper.train.label_smoothing) == (4000, 0.1)
    assert paper.train.betas == (0.9, 0.98) and paper.train.adam_eps == 1e-9
    assert paper.train.max_steps == 100_000 and paper.data.max_tokens * 8 >= 25_000


def test_the_one_hour_config_is_the_main_job_on_another_schedule():
    main = load_config(CONFIGS / "multi30k-de-en.yaml")
    hour = load_config(CONFIGS / "multi30k-de-en-1h-fp32.yaml")
    assert hour.model == main.model.replace(dropout=0.15) and hour.data == main.data
    assert (hour.train.schedule, hour.train.max_steps, hour.train.min_lr) == ("cosine", 1700, 0.0)
    assert hour.train.keep_last == 5 and hour.decode == main.decode


def test_a_fine_tuning_model_takes_the_source_run_s_fields_and_may_change_only_dropout(tmp_path):
    from aiayn.config import merge_model_config
    from aiayn.model.config import ModelConfig

    source = ModelConfig(d_model=64, n_heads=4, d_ff=128, vocab_size=500, dropout=0.3)
    merged = merge_model_config(ModelConfig(dropout=0.05), source, source="runs/src")
    assert merged == source.replace(dropout=0.05)  # defaults filled, dropout kept
    with pytest.raises(ValueError, match=r"model.d_ff is 256, but train.init_from runs/src has "
                       r"128; leave model.d_ff out to take it from there"):  # fmt: skip
        merge_model_config(ModelConfig(d_ff=256), source, source="runs/src")
    # from YAML: keys not given come from the source run's config.yaml; a missing run is named
    run = tmp_path / "src"
    save_config(RunConfig(model=source), run / "config.yaml")
    raw = {"model": {"dropout": 0.0}, "train": {"init_from": str(run)}}
    assert config_from_dict(raw).model == source.replace(dropout=0.0)
    with pytest.raises(ValueError, match="train.init_from .*nowhere is not a run directory"):
        config_from_dict({"train": {"init_from": str(tmp_path / "nowhere")}})
