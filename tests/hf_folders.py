"""Helpers for the import tests: a copy of a HuggingFace folder with config.json edited, and the
one-line refusal `aiayn import` must print for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aiayn.cli import main


def edited(hf_folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of `hf_folder` whose config.json has `changes`."""
    folder = tmp_path / "edited"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def assert_import_refused(format: str, folder: Path, run_dir: Path, message: str, capsys) -> None:
    """`aiayn import FORMAT folder` exits 2 with one line starting with `message` (after the
    command's prefix), and writes no run directory."""
    with pytest.raises(SystemExit) as exit_info:
        main(["import", format, str(folder), "-o", str(run_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"aiayn import: error: {message}"), err
    assert not run_dir.exists()
