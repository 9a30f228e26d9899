"""The inference commands on tiny run directories: translate keeps one line per input line,
from stdin or files; generate, evaluate and attention print or write what they say."""

from __future__ import annotations

import io

import pytest

from aiayn.api import load
from aiayn.cli import main
from tests.tiny_runs import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("mt"), translation=True)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("lm"), translation=False)


LINES = ["der hund läuft", "", "katze", "  ", "rot blau haus im garten"]


def stdin(data: bytes) -> io.TextIOWrapper:
    """A standard input holding `data` (read through its `.buffer`, as the CLI does)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")


def test_translate_stdin_to_stdout_one_line_per_line(mt_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", stdin("".join(line + "\n" for line in LINES).encode()))
    main(["translate", str(mt_run), "--beam", "2", "--alpha", "0.6"])
    out = capsys.readouterr().out
    assert out.endswith("\n") and len(out.split("\n")) == len(LINES) + 1
    assert out.split("\n")[:-1] == load(mt_run).translate(LINES, beam=2, alpha=0.6)
    monkeypatch.setattr("sys.stdin", stdin(b""))
    main(["translate", str(mt_run)])
    assert capsys.readouterr().out == ""


def test_inference_commands_keep_freed_memory_before_loading(mt_run, monkeypatch, capsys):
    """Decoding allocates a (rows, vocabulary) tensor per step: glibc must be told to keep
    freed memory before the model loads (`aiayn.machine.keep_freed_memory`)."""
    import aiayn.cli

    calls = []
    monkeypatch.setattr(aiayn.cli, "keep_freed_memory", lambda: calls.append("malloc") or "")
    real_load = aiayn.cli.load

    def load_after(*args, **kwargs):
        calls.append("load")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(aiayn.cli, "load", load_after)
    monkeypatch.setattr("sys.stdin", stdin(b"katze\n"))
    main(["translate", str(mt_run)])
    main(["evaluate", str(mt_run), "--split", "valid"])
    assert calls == ["malloc", "load"] * 2 and capsys.readouterr().out


def test_translate_with_the_decoder_step_compiled_gives_the_same_lines(mt_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", stdin("".join(line + "\n" for line in LINES).encode()))
    main(["translate", str(mt_run), "--compile", "--beam", "2", "--alpha", "0.6"])
    assert capsys.readouterr().out.split("\n")[:-1] == load(mt_run).translate(
        LINES, beam=2, alpha=0.6
    )


def test_translate_files_with_a_checkpoint_choice(mt_run, tmp_path, capsys):
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("\n".join(LINES))  # no final newline: still five lines
    main(["translate", str(mt_run), "-i", str(source), "-o", str(target), "--beam", "1",
          "--checkpoint", "last"])  # fmt: skip
    assert len(target.read_text().split("\n")) == len(LINES) + 1
    assert target.read_text().split("\n")[1] == ""
    with pytest.raises(SystemExit):
        main(["translate", str(mt_run), "--checkpoint", "averaged"])
    assert "averaged" in capsys.readouterr().err


def test_generate_prints_prompt_and_continuation(lm_run, capsys):
    main(["generate", str(lm_run), "--prompt", "der hund", "--max-new-tokens", "8",
          "--temperature", "0.8", "--top-p", "0.9", "--seed", "1"])  # fmt: skip
    first = capsys.readouterr().out
    assert first.startswith("der hund")
    main(["generate", str(lm_run), "--prompt", "der hund", "--max-new-tokens", "8",
          "--temperature", "0.8", "--top-p", "0.9", "--seed", "1"])  # fmt: skip
    assert capsys.readouterr().out == first


def test_evaluate_prints_scores_with_signatures(mt_run, lm_run, tmp_path, capsys):
    folder = mt_run.parent
    hyps = tmp_path / "hyps.txt"
    main(["evaluate", str(mt_run), "--files", str(folder / "valid.de"), str(folder / "valid.en"),
          "--beam", "2", "--output", str(hyps)])  # fmt: skip
    out = capsys.readouterr().out
    assert "BLEU" in out and "chrF2" in out and "case:mixed" in out and "case:lc" in out
    assert len(hyps.read_text().splitlines()) == 8
    main(["evaluate", str(lm_run), "--split", "valid", "--context", "16", "--stride", "4"])
    assert "perplexity" in capsys.readouterr().out


def test_attention_writes_pngs(mt_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    main(["attention", str(mt_run), "--source", "der hund", "-o", str(tmp_path),
          "--layers", "0", "--heads", "1"])  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "cross-layer0.png",
        "decoder-self-layer0.png",
        "encoder-self-layer0.png",
    ]
    assert "wrote" in capsys.readouterr().out
