"""Decoding in bf16 and int8 from a run: `aiayn quantize` saves int8 weights as safetensors that
load back to the same translations as quantizing at load time, the precision is named wherever
the model is described, and what cannot be done is refused in one line."""

from __future__ import annotations

import io

import pytest
import safetensors
import torch

from aiayn.api import load, quantize
from aiayn.cli import main
from aiayn.model.precision import INT8_FORMAT
from aiayn.serve import load_models
from tests.tiny_runs import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")

LINES = ["der hund läuft", "katze", "rot blau haus im garten", "der garten"]


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("mt"), translation=True, steps=60)


def test_quantize_saves_int8_safetensors_that_load_as_quantized_at_load_time(mt_run):
    file = quantize(mt_run)
    assert file == mt_run / "int8" / "model.safetensors"
    with safetensors.safe_open(str(file), framework="pt") as f:
        assert f.metadata() == {
            "format": INT8_FORMAT,
            "source": "checkpoint-best/model.safetensors",
        }
        assert f.get_tensor("out_proj.weight_int8").dtype == torch.int8
    saved, on_the_fly = load(mt_run, "int8"), load(mt_run, precision="int8")
    fp32 = load(mt_run)
    assert saved.precision == on_the_fly.precision == "int8" and fp32.precision == "fp32"
    assert saved.parameters == fp32.parameters  # the trained model's count, whatever the storage
    assert "int8 on cpu" in saved.summary()
    for beam in (1, 3):
        assert saved.translate(LINES, beam=beam) == on_the_fly.translate(LINES, beam=beam)
    # The tiny model learned its word-for-word task; int8 keeps the words.
    assert saved.translate(["der hund"], beam=1) == fp32.translate(["der hund"], beam=1)


def test_bf16_decodes_and_says_so(mt_run):
    model = load(mt_run, precision="bf16")
    assert model.precision == "bf16" and "bf16 on cpu" in model.summary()
    assert model.translate(["der hund"], beam=2) == load(mt_run).translate(["der hund"], beam=2)
    result = model.evaluate(files=[mt_run.parent / "valid.de", mt_run.parent / "valid.en"])
    assert str(result).splitlines()[0].endswith(f"segments in {result.seconds:.1f} s, bf16")


def test_what_cannot_be_done_is_refused(mt_run):
    quantize(mt_run)
    with pytest.raises(ValueError, match="holds int8 weights; they cannot be decoded in fp32"):
        load(mt_run, "int8", precision="fp32")
    with pytest.raises(ValueError, match="export writes fp32 weights; .* not int8"):
        load(mt_run, "int8").export(mt_run.parent / "hf", format="hf-marian")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        load(mt_run, precision="fp16")


def test_commands_take_dtype_and_quantize(mt_run, tmp_path, monkeypatch, capsys):
    main(["quantize", str(mt_run), "--checkpoint", "last", "-o", str(tmp_path / "q")])
    assert "use it with --checkpoint" in capsys.readouterr().out
    with safetensors.safe_open(str(tmp_path / "q" / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["source"].startswith("checkpoint-000000")
    text = "".join(line + "\n" for line in LINES)
    expected = {
        "--quantize": load(mt_run, precision="int8").translate(LINES),
        "--dtype": load(mt_run, precision="bf16").translate(LINES),
    }
    for flag, value in (("--quantize", "int8"), ("--dtype", "bf16")):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        main(["translate", str(mt_run), flag, value])
        assert capsys.readouterr().out.splitlines() == expected[flag]
    with pytest.raises(SystemExit):
        main(["translate", str(mt_run), "--quantize", "int8", "--dtype", "bf16"])
    assert "not allowed with argument" in capsys.readouterr().err
    main(["evaluate", str(mt_run), "--quantize", "int8", "--files",
          str(mt_run.parent / "valid.de"), str(mt_run.parent / "valid.en")])  # fmt: skip
    assert ", int8\n" in capsys.readouterr().out


def test_server_models_load_in_the_precision_asked(mt_run):
    models = load_models({"mt": mt_run}, precision="int8")
    assert models["mt"].precision == "int8"
