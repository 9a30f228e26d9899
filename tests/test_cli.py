"""The command line: the demo runs and prints decoded examples next to their sources; `machine`
describes the machine and the precision `auto` picks."""

from __future__ import annotations

import dataclasses
import json

import pytest

from aiayn.cli import main
from aiayn.machine import describe_machine, resolve_precision


def test_demo_prints_sources_and_decodings(capsys):
    main(["demo", "--seconds", "3"])
    out = capsys.readouterr().out
    assert "source [" in out and "-> decoded [" in out
    assert "held-out sequences copied exactly" in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main(["fly"])
    assert "invalid choice" in capsys.readouterr().err


def test_machine_says_what_auto_picks_and_why(capsys, monkeypatch):
    main(["machine"])
    summary, line = capsys.readouterr().out.splitlines()
    machine = describe_machine("cpu")
    precision, reason = resolve_precision("auto", machine)
    assert summary == machine.summary() and machine.cpu_model in summary
    assert line == f"precision: auto -> {precision} ({reason.removeprefix('auto: ')})"
    main(["machine", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert record["auto_precision"] == precision and record["cpu_flags"] == list(machine.cpu_flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the AVX2 machine, emulated
    main(["machine"])
    assert capsys.readouterr().out.splitlines()[1].startswith("precision: auto -> fp32 (this CPU")


def test_every_decoding_flag_lands_in_its_decode_options_field():
    from aiayn.cli import build_parser
    from aiayn.config import DecodeOptions

    fields = {f.name for f in dataclasses.fields(DecodeOptions)}
    given = {
        "translate": [
            "--beam",
            "2",
            "--alpha",
            "0.3",
            "--coverage",
            "0.1",
            "--max-len-a",
            "1",
            "--max-len-b",
            "3",
            "--min-len",
            "1",
            "--long-input",
            "error",
        ],
        "evaluate": ["--beam", "2", "--alpha", "0.3", "--min-len", "1"],
        "generate": [
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.5",
            "--top-k",
            "3",
            "--top-p",
            "0.9",
            "--seed",
            "1",
        ],
    }
    for command, flags in given.items():
        args = vars(build_parser().parse_args([command, "RUN", *flags]))
        named = {flag.removeprefix("--").replace("-", "_") for flag in flags[::2]}
        assert named <= fields, command  # no decoding flag outside DecodeOptions
        assert {k for k in fields if args.get(k) is not None} == named, command
