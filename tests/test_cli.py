"""The command line: the demo runs and prints decoded examples next to their sources."""

from __future__ import annotations

import pytest

from aiayn.cli import main


def test_demo_prints_sources_and_decodings(capsys):
    main(["demo", "--seconds", "3"])
    out = capsys.readouterr().out
    assert "source [" in out and "-> decoded [" in out
    assert "held-out sequences copied exactly" in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main(["fly"])
    assert "invalid choice" in capsys.readouterr().err
