"""Layers point down: each part of aiayn imports only what STYLE.md's table allows."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "aiayn"
BENCHMARKS = REPO / "benchmarks"

# part -> parts of aiayn it may import (a part is a subpackage or a top-level module)
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "data": {"data"},
    "generate": {"generate", "model"},
    "config": {"model.config", "generate.options"},
    "train": {"train", "model", "data", "generate", "evaluate", "config", "translate"},
    "evaluate": {"evaluate", "model", "data", "generate"},
    "api": {
        "model",
        "data",
        "generate",
        "train",
        "evaluate",
        "config",
        "translate",
        "convert",
    },
    # other libraries' layouts in and out; reads safetensors through the run directory's reader
    "convert": {"convert", "model", "data", "train.checkpoint"},
    # text in, text out over generate/: the one translation path under train/ and api.py
    "translate": {"model", "data", "generate"},
    # `aiayn data prepare/show/binarize` only touch text files and tokenizers, so the CLI calls
    # aiayn.data.prepare and .binarized directly, and reads translate's input via the corpus reader
    # (STYLE.md's table routes everything else through api/train).
    # `aiayn serve` starts the server (imported lazily: the `serve` extra may be missing)
    "cli": {"api", "config", "train", "data.prepare", "data.corpus", "data.binarized", "serve"},
    "serve": {"serve", "api", "config", "train"},
    "__init__": {"model", "api", "config"},
    "__main__": {"cli"},
    # leaves every part may import: the machine's description, durable file writes
    "machine": set(),
    "files": set(),
}
LEAVES = ("machine", "files")


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_names(path: Path, root: Path = REPO) -> set[str]:
    """Every dotted name `path` imports, anywhere in it (lazy imports in functions too), with
    relative imports resolved against the file's own package (its folders below `root`)."""
    inside = path.is_relative_to(root)
    package = path.relative_to(root).with_suffix("").parts[:-1] if inside else ()
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def imported_parts(path: Path, root: Path = REPO) -> set[str]:
    """The parts of aiayn that `path` imports, as `model.attention.x` (without `aiayn.`)."""
    names = imported_names(path, root)
    return {name.removeprefix("aiayn.") for name in names if name.startswith("aiayn.")}


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
            if imported.split(".")[0] in LEAVES and part not in LEAVES:
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


def test_relative_imports_are_seen(tmp_path):
    fake = tmp_path / "aiayn" / "model" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "from ..train import loop\nfrom . import masks\nfrom .kv_cache import KVCache\n"
    )
    assert imported_parts(fake, root=tmp_path) == {
        "train.loop",
        "model.masks",
        "model.kv_cache.KVCache",
    }
    assert not allowed("train.loop", ALLOWED[part_of(PACKAGE / "model" / "fake.py")])


def benchmark_graph() -> dict[str, set[str]]:
    """benchmarks module -> the benchmarks modules it imports (lazily or not)."""
    graph = {}
    for path in sorted(BENCHMARKS.glob("*.py")):
        names = imported_names(path)
        graph[path.stem] = {
            name.split(".")[1] for name in names if name.startswith("benchmarks.")
        } - {path.stem}
    return graph


def test_benchmarks_import_no_circle_and_the_harness_is_a_leaf():
    graph = benchmark_graph()
    assert graph["harness"] == set()
    harness_uses = {n for n in imported_names(BENCHMARKS / "harness.py") if n.startswith("aiayn")}
    assert harness_uses <= {"aiayn.machine.describe_machine"}
    for path in sorted(BENCHMARKS.glob("*.py")):
        uses = {n for n in imported_names(path) if n.startswith("aiayn.")}
        assert not any(allowed(n.removeprefix("aiayn."), {"cli", "serve"}) for n in uses), path

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in graph.get(start, ())
        )

    circles = [module for module in graph if reaches(module, module, set())]
    assert not circles, f"benchmarks import in a circle: {circles}"
