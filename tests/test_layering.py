"""Layers point down: each part of aiayn imports only what STYLE.md's table allows."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aiayn"

# part -> parts of aiayn it may import (a part is a subpackage or a top-level module)
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "data": {"data"},
    "generate": {"generate", "model"},
    "config": {"model.config"},
    "train": {"train", "model", "data", "generate", "evaluate", "config"},
    "evaluate": {"evaluate", "model", "data", "generate"},
    "export": {"model"},
    "api": {"model", "data", "generate", "train", "evaluate", "config", "export"},
    # `aiayn data prepare/show` only touch text files and tokenizers, so the CLI calls
    # aiayn.data.prepare directly (STYLE.md's table routes everything else through api/train).
    "cli": {"api", "config", "train", "data.prepare"},
    "serve": {"serve", "api", "config", "train"},
    "__init__": {"model", "api", "config"},
    "__main__": {"cli"},
    "machine": set(),  # a leaf: every part may import it
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path) -> set[str]:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("aiayn."):
                parts.add(name.removeprefix("aiayn."))
    return parts


def allowed(imported: str, rules: set[str]) -> bool:
    return any(imported == rule or imported.startswith(rule + ".") for rule in rules)


def test_layers_point_down():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of(path)
        rules = ALLOWED.get(part)
        assert rules is not None, f"{path} is in a part of the package STYLE.md does not list"
        for imported in imported_parts(path):
            # `from aiayn.model import x` lists `model.x`: x may be a module or a name in it
            if imported.split(".")[0] == "machine" and part != "machine":
                continue
            if not allowed(imported, rules) and not allowed(imported.rsplit(".", 1)[0], rules):
                violations.append(f"{path.relative_to(PACKAGE.parent)} imports aiayn.{imported}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from aiayn.train.loop import train\nimport aiayn.cli\n")
    assert imported_parts(bad) == {"train.loop.train", "cli"}
    assert not allowed("train.loop.train", ALLOWED["model"])
    assert not allowed("data", ALLOWED["cli"]) and allowed("data.prepare", ALLOWED["cli"])
    assert allowed("model.config", ALLOWED["config"]) and not allowed("model", ALLOWED["config"])
    assert not allowed("model", ALLOWED["machine"])
