"""Bad input is named, never a traceback: invalid UTF-8 in a file or on stdin names its place
(or is replaced, counted on stderr), lone surrogates are refused naming the index, an output
file is whole or absent, and limits past the model's positions are capped with a warning."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from aiayn.api import load
from aiayn.cli import main
from aiayn.data.tokenizer import Tokenizer
from tests.tiny_runs import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent

# line 2 holds an encoded surrogate (ED A0 80), which strict UTF-8 refuses
BAD = b"der hund\nkatze \xed\xa0\x80 rot\nhaus\n"


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("mt"), translation=True)


def stdin(data: bytes) -> io.TextIOWrapper:
    """Standard input as Python opens it under a C locale (undecodable bytes -> surrogates)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")


def one_line_error(capsys, exit_info, command: str) -> str:
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    prefix = f"aiayn {command}: error: "
    assert err.startswith(prefix)
    return err.removeprefix(prefix).strip()


def test_invalid_utf8_in_an_input_file_names_file_line_and_byte(mt_run, tmp_path, capsys):
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_bytes(BAD)
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", str(mt_run), "-i", str(source), "-o", str(out)])
    error = one_line_error(capsys, exit_info, "translate")
    assert error.startswith(f"{source}:2: invalid UTF-8 (invalid continuation byte: byte 0xed at")
    assert "--on-bad-input replace" in error and not out.exists()


def test_invalid_utf8_on_stdin_names_stdin_and_line(mt_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", stdin(BAD))
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", str(mt_run)])
    assert one_line_error(capsys, exit_info, "translate").startswith("<stdin>:2: invalid UTF-8")


def test_replace_translates_every_line_and_counts_the_replaced_ones(mt_run):
    # a real process: real stdin (C locale, as under many schedulers) and real stderr
    command = [sys.executable, "-m", "aiayn", "translate", str(mt_run), "--on-bad-input",
               "replace", "--beam", "1"]  # fmt: skip
    env = {**os.environ, "LC_ALL": "C", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, input=BAD + b"\xff\n", capture_output=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    replaced = ["der hund", "katze \ufffd\ufffd\ufffd rot", "haus", "\ufffd"]
    assert done.stdout.decode().split("\n")[:-1] == load(mt_run).translate(replaced, beam=1)
    assert done.stderr.decode() == (
        "aiayn translate: warning: <stdin>: invalid UTF-8 replaced by U+FFFD on 2 lines (2, 4)\n"
    )


def test_evaluate_names_a_bad_reference_file_or_replaces(mt_run, tmp_path, capsys):
    source, reference = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("der hund\nkatze\nhaus\n")
    reference.write_bytes(BAD)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(mt_run), "--files", str(source), str(reference)])
    assert one_line_error(capsys, exit_info, "evaluate").startswith(f"{reference}:2: invalid")
    with pytest.warns(UserWarning, match=f"{reference}: invalid UTF-8 replaced by U\\+FFFD on 1 "
                      r"line \(2\)"):  # fmt: skip
        main(["evaluate", str(mt_run), "--files", str(source), str(reference), "--on-bad-input",
              "replace"])  # fmt: skip
    assert "BLEU" in capsys.readouterr().out


def test_the_api_refuses_a_lone_surrogate_naming_its_index(mt_run):
    model = load(mt_run)
    with pytest.raises(ValueError, match=r"text at index 2 holds a lone surrogate '\\ud800' at "
                       r"character 6: not valid Unicode"):  # fmt: skip
        model.translate(["der hund", "haus", "katze \ud800 rot"])
    with pytest.raises(ValueError, match="text holds a lone surrogate"):
        Tokenizer.load(mt_run / "tokenizer.model").encode("\udcff")


def test_an_output_file_is_whole_or_not_written(mt_run, tmp_path, capsys):
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    out.write_text("the translations of yesterday\n")
    source.write_text("der hund\n" + "katze " * 30 + "\n")  # line 2: longer than 40 positions
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", str(mt_run), "-i", str(source), "-o", str(out), "--long-input",
              "error"])  # fmt: skip
    assert "input 2 has" in one_line_error(capsys, exit_info, "translate")
    assert out.read_text() == "the translations of yesterday\n"  # untouched
    with pytest.warns(UserWarning, match="input 2 has 180 tokens.*kept its first 39"):
        main(["translate", str(mt_run), "-i", str(source), "-o", str(out), "--beam", "1"])
    assert len(out.read_text().split("\n")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]  # no temp file


def test_length_limits_past_the_positions_are_capped_with_a_warning(mt_run, monkeypatch, capsys):
    model = load(mt_run)
    with pytest.warns(UserWarning, match="max_len_b 100000 is more than the model's 40 positions "
                      "allow; capped at 40"):  # fmt: skip
        capped = model.translate(["der hund"], beam=2, max_len_b=100000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert capped == model.translate(["der hund"], beam=2, max_len_b=40)
    monkeypatch.setattr("sys.stdin", stdin(b"der hund\n"))
    with pytest.warns(UserWarning) as caught:
        main(["translate", str(mt_run), "--beam", "2", "--max-len-b", "100000", "--min-len",
              "500"])  # fmt: skip
    assert [str(w.message).split(" is")[0] for w in caught] == ["max_len_b 100000", "min_len 500"]
    assert capsys.readouterr().out.count("\n") == 1


def test_a_bad_argument_string_is_one_line(mt_run, capsys):
    # argv is decoded with surrogateescape: a non-UTF-8 --source arrives as surrogates
    with pytest.raises(SystemExit) as exit_info:
        main(["attention", str(mt_run), "--source", "katze \udced", "-o", "unused"])
    assert "lone surrogate" in one_line_error(capsys, exit_info, "attention")
