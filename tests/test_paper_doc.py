"""docs/paper.md: its snippets, run in order as one session, print what the page shows under them,
and its relative links point to files of the repository that define the names given with them.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "paper.md"
MIN_CHECKED = 10

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Block:
    """One fenced code block of the page."""

    lang: str
    text: str
    line: int
    """Line number (1-based) of its opening fence."""
    end: int
    """Line number of its closing fence."""


@dataclass
class Snippet:
    code: Block
    output: Block

    def name(self) -> str:
        first = self.code.text.splitlines()[0] if self.code.text.strip() else "(empty)"
        return f"docs/paper.md:{self.code.line + 1}: {first!r}"


def fenced_blocks(lines: list[str]) -> list[Block]:
    blocks, opened = [], None
    for number, line in enumerate(lines, start=1):
        if opened is None and line.startswith("```"):
            opened = (line[3:].strip(), number, [])
        elif opened is not None and line.rstrip() == "```":
            lang, start, body = opened
            blocks.append(Block(lang, "\n".join(body) + ("\n" if body else ""), start, number))
            opened = None
        elif opened is not None:
            opened[2].append(line)
    assert opened is None, f"docs/paper.md:{opened[1]}: code block never closed"
    return blocks


def snippets(lines: list[str]) -> list[Snippet]:
    """Every ```python block with the ```text block right after it (only blank lines between)."""
    blocks, found = fenced_blocks(lines), []
    for block, after in zip(blocks, blocks[1:] + [None], strict=True):
        if block.lang != "python":
            continue
        between = [] if after is None else lines[block.end : after.line - 1]
        if after is None or after.lang != "text" or any(line.strip() for line in between):
            pytest.fail(
                f"docs/paper.md:{block.line}: a python block must be followed by a text block "
                "holding its output (use another language tag for code that is not run)"
            )
        found.append(Snippet(block, after))
    return found


def normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@pytest.fixture(scope="module")
def page_lines() -> list[str]:
    return PAGE.read_text(encoding="utf-8").splitlines()


def test_snippets_print_what_the_page_shows(page_lines):
    found = snippets(page_lines)
    assert len(found) >= MIN_CHECKED, f"docs/paper.md has {len(found)} checked snippets"
    namespace: dict[str, object] = {"__name__": "paper_md"}
    for snippet in found:
        stdout = io.StringIO()
        code = compile(snippet.code.text, f"docs/paper.md:{snippet.code.line + 1}", "exec")
        try:
            with contextlib.redirect_stdout(stdout):
                exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"{snippet.name()} raised {error!r}") from error
        got, want = normalised(stdout.getvalue()), normalised(snippet.output.text)
        assert got == want, (
            f"{snippet.name()} printed something else than its text block "
            f"(line {snippet.output.line}):\n--- printed\n{got}\n--- the page\n{want}"
        )


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+\.py)\):((?:\s*`[\w.]+`,?)+)")


def relative_links(text: str) -> list[str]:
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


def test_relative_links_point_to_files(page_lines):
    text = "\n".join(page_lines)
    links = relative_links(text)
    assert links, "docs/paper.md has no relative links"
    missing = [t for t in links if not (PAGE.parent / t.split("#")[0]).resolve().exists()]
    assert not missing, f"docs/paper.md links to files that do not exist: {missing}"


def test_code_links_name_functions_their_files_define(page_lines):
    """`[file.py](../file.py): `name`, `Class.method`` in a **Code:** paragraph: each name is a
    def or class (a method: its last part) of that file."""
    paragraphs = "\n".join(page_lines).split("\n\n")
    checked = 0
    for paragraph in (p.replace("\n", " ") for p in paragraphs if p.startswith("**Code:**")):
        for target, names in CODE_LINK.findall(paragraph):
            source = (PAGE.parent / target).resolve().read_text(encoding="utf-8")
            for name in re.findall(r"`([\w.]+)`", names):
                last = name.split(".")[-1]
                assert re.search(rf"^\s*(def|class) {last}\b", source, re.M), (
                    f"docs/paper.md names `{name}` next to {target}, which defines no {last}"
                )
                checked += 1
    assert checked >= 20, f"only {checked} names checked: are the **Code:** lines still there?"
