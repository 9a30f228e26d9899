"""Corpora: text readers (plain or .gz), the data root, and the named data sets (Multi30k, Tiny
Shakespeare with sha256-pinned downloads; WikiText-2 from local files). Text stays text here;
tokenizer.py turns it into ids.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
"""Upstream folder of the raw (cased, untokenised) Multi30k task-1 files."""
MULTI30K_LANGS = ("de", "en", "fr", "cs")
MULTI30K_SPLITS = {"train": "train", "val": "val", "test2016": "test_2016_flickr"}
"""Split name -> file stem (`<stem>.<lang>.gz`)."""
MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
WIKITEXT2_SPLITS = ("train", "valid", "test")
WIKITEXT2_TRAIN_BLOB = "2d84b35af79e411d73ea7cae83c73964c6ac83b4"
"""`git hash-object train.txt` of pytorch/examples' copy (36,718 lines, 2,088,628 tokens)."""
OnBadInput = Literal["error", "replace"]
"""Invalid UTF-8 in text read: stop with an error naming file, line and byte, or replace the
bad bytes with U+FFFD (with a warning counting the lines) and go on."""
STDIN = "-"
"""The file name that means standard input."""


class DownloadError(ValueError):
    """A download failed or its bytes do not match the pinned sha256; nothing was written.

    A `ValueError` so that callers (and the command line) report it like any other bad input.
    """


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder the named data sets live in.

    Args:
        data_dir: Explicit folder (`data.data_dir`, `--data-dir`); wins over everything else.

    Returns:
        `data_dir`, else `$AIAYN_DATA`, else a per-user cache (`$XDG_CACHE_HOME/aiayn` or
        `~/.cache/aiayn`).

    Raises:
        ValueError: `data_dir` or `$AIAYN_DATA` names a folder that does not exist (a typo is
            reported, never created).
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"data.data_dir (--data-dir) {path} does not exist; fix the path, or leave it "
                "unset to use $AIAYN_DATA or the download cache"
            )
        return path
    if os.environ.get("AIAYN_DATA"):
        path = Path(os.environ["AIAYN_DATA"]).expanduser()
        if not path.is_dir():
            raise ValueError(f"$AIAYN_DATA {path} does not exist; fix it, or unset it")
        return path
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "aiayn"


def configured_data_dir(data_dir: str | Path | None = None) -> bool:
    """Whether the data root was chosen (`data_dir` or `$AIAYN_DATA`) rather than the cache:
    named data sets are downloaded only into the cache."""
    return data_dir is not None or bool(os.environ.get("AIAYN_DATA"))


def read_text(path: str | Path, *, on_bad_input: OnBadInput = "error") -> str:
    """The whole file as text: plain, or gzip-compressed when the name ends in `.gz`; `-` is
    standard input.

    Raises:
        ValueError: The file is not valid UTF-8 (names the file, line and byte; see
            `OnBadInput`) or not valid gzip.
    """
    if str(path) == STDIN:
        return decode_text(sys.stdin.buffer.read(), "<stdin>", on_bad_input=on_bad_input)
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    return decode_text(data, str(path), on_bad_input=on_bad_input)


def decode_text(data: bytes, name: str, *, on_bad_input: OnBadInput = "error") -> str:
    """`data` decoded as UTF-8; `name` (a file, `<stdin>`) is what errors and warnings name."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if on_bad_input == "error":
            line = data.count(b"\n", 0, error.start) + 1
            raise ValueError(
                f"{name}:{line}: invalid UTF-8 ({error.reason}: byte "
                f"{data[error.start]:#04x} at offset {error.start}); fix the file or pass "
                "--on-bad-input replace"
            ) from None
    bad = [n for n, line in enumerate(data.split(b"\n"), 1) if not _is_utf8(line)]
    shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    warnings.warn(
        f"{name}: invalid UTF-8 replaced by U+FFFD on {len(bad)} "
        f"line{'s' if len(bad) > 1 else ''} ({shown})",
        stacklevel=2,
    )
    return data.decode("utf-8", errors="replace")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def split_lines(text: str) -> list[str]:
    """Lines without line endings. Only `\\n` (and a `\\r` before it) ends a line, so sentences
    containing other Unicode line separators stay aligned with their translations, and line
    counts match `wc -l`."""
    if not text:
        return []
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


def read_lines(path: str | Path, *, on_bad_input: OnBadInput = "error") -> list[str]:
    """The lines of a text file (plain or .gz; `-` is standard input), without line endings
    (see `split_lines`).

    Raises:
        ValueError: Invalid UTF-8, naming the file and line (see `OnBadInput`).
    """
    return split_lines(read_text(path, on_bad_input=on_bad_input))


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of a plain or .gz file one at a time, without line endings, in constant
    memory (for corpora too big to read whole; `read_lines` otherwise).

    Raises:
        ValueError: Invalid UTF-8, naming the file and line (decoded line by line: a text
            stream decodes ahead in blocks, so its errors would name the wrong line).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        for number, line in enumerate(file, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid UTF-8 ({error.reason})") from None
            yield text.removesuffix("\n").removesuffix("\r")


def read_parallel(
    src_path: str | Path, tgt_path: str | Path, *, on_bad_input: OnBadInput = "error"
) -> list[tuple[str, str]]:
    """Sentence pairs from two line-aligned files (line i of one translates line i of the other).

    Raises:
        ValueError: The files have different line counts (names both files and both counts), or
            one is not valid UTF-8.
    """
    src = read_lines(src_path, on_bad_input=on_bad_input)
    tgt = read_lines(tgt_path, on_bad_input=on_bad_input)
    if len(src) != len(tgt):
        raise ValueError(
            f"parallel files differ in length: {src_path} has {len(src)} lines, "
            f"{tgt_path} has {len(tgt)} lines"
        )
    return list(zip(src, tgt, strict=True))


def multi30k_files(
    split: str,
    lang: str,
    data_dir: str | Path | None = None,
    *,
    download: bool | None = None,
    base_url: str = MULTI30K_URL,
) -> Path:
    """The path of one Multi30k file, downloaded (and verified) into the data root if missing.

    Args:
        split: `train`, `val` or `test2016`.
        lang: `de`, `en`, `fr` or `cs`.
        data_dir: See `data_root`; files are looked for in `<root>/multi30k/`.
        download: Fetch a missing file from `base_url`; otherwise a missing file is an error.
            None: only when no data root was chosen (`configured_data_dir`), into the cache.
        base_url: Folder URL holding the upstream files (tests point it at a local server).

    Raises:
        ValueError: Unknown split or language.
        FileNotFoundError: The file is missing and `download` is False.
        DownloadError: The download failed or did not match its pinned sha256.
    """
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"unknown Multi30k split {split!r}; choose from {list(MULTI30K_SPLITS)}")
    if lang not in MULTI30K_LANGS:
        raise ValueError(f"unknown Multi30k language {lang!r}; choose from {MULTI30K_LANGS}")
    name = f"{MULTI30K_SPLITS[split]}.{lang}.gz"
    path = data_root(data_dir) / "multi30k" / name
    url = base_url.rstrip("/") + "/" + name
    return _find_or_fetch(path, url, MULTI30K_SHA256[name], download, data_dir)


def tinyshakespeare_text(
    data_dir: str | Path | None = None,
    *,
    download: bool | None = None,
    url: str = TINYSHAKESPEARE_URL,
) -> str:
    """All of Tiny Shakespeare (1,115,394 characters), from `<root>/tinyshakespeare/input.txt`.

    Downloads and verifies the file when it is missing, as `multi30k_files` does.
    """
    path = data_root(data_dir) / "tinyshakespeare" / "input.txt"
    return read_text(_find_or_fetch(path, url, TINYSHAKESPEARE_SHA256, download, data_dir))


def wikitext2_text(split: str, data_dir: str | Path | None = None) -> str:
    """A split of WikiText-2 (v1, word level: `wiki.<split>.tokens` of wikitext-2-v1.zip, which
    pytorch/examples' word_language_model ships as `<split>.txt`) from `<root>/wikitext-2/`.
    Not downloaded: the files are read where the user put them.

    Raises:
        ValueError: An unknown split.
        FileNotFoundError: The file is missing; the message says what to put where.
    """
    if split not in WIKITEXT2_SPLITS:
        raise ValueError(f"unknown WikiText-2 split {split!r}; choose from {WIKITEXT2_SPLITS}")
    path = data_root(data_dir) / "wikitext-2" / f"{split}.txt"
    if not path.is_file():
        check = f"; git hash-object gives {WIKITEXT2_TRAIN_BLOB}" if split == "train" else ""
        raise FileNotFoundError(
            f"{path}: not found; put WikiText-2's {split}.txt there (wiki.{split}.tokens of "
            "wikitext-2-v1.zip, or pytorch/examples' word_language_model/data/wikitext-2/"
            f"{split}.txt{check})"
        )
    return read_text(path)


def split_text(text: str, split: str, *, train_fraction: float = 0.9) -> str:
    """The `train` (first 90% of characters) or `val` (the rest) part of a text, as nanoGPT."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    if split == "train":
        return text[:cut]
    if split == "val":
        return text[cut:]
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'val'")


def _find_or_fetch(
    path: Path, url: str, sha256: str, download: bool | None, data_dir: str | Path | None
) -> Path:
    if path.exists():
        return path
    if download is None and configured_data_dir(data_dir):
        where = "data.data_dir" if data_dir is not None else "$AIAYN_DATA"
        raise FileNotFoundError(
            f"{path} is missing; {where} is set, so nothing is downloaded into it (put the "
            f"file there, or unset {where} to download into the cache; source: {url})"
        )
    if download is False:
        raise FileNotFoundError(f"{path} is missing (downloading is off; source: {url})")
    return fetch(url, path, sha256)


def fetch(url: str, dest: str | Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, keeping it only if its sha256 is the pinned one.

    Bytes go to a temporary file beside `dest`, renamed into place only after the whole body
    arrived and matched `sha256`; on any failure the temporary file is removed.

    Returns:
        `dest`.

    Raises:
        DownloadError: Network or HTTP error, a body shorter than its Content-Length, or a
            checksum mismatch. The message names the URL and says nothing was written.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest, size = _download(url, out, timeout)
        if digest != sha256:
            raise DownloadError(
                f"sha256 mismatch for {url}: expected {sha256}, got {digest} ({size} bytes); "
                f"{dest} was not written"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, out: BinaryIO, timeout: float) -> tuple[str, int]:
    """Stream `url` into the open file `out`; returns (sha256 hex digest, bytes received)."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (OSError, http.client.HTTPException) as error:
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        else:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise DownloadError(
            f"download of {url} failed after {size} bytes ({reason}); nothing was written"
        ) from None
    if expected is not None and size != int(expected):
        raise DownloadError(
            f"download of {url} interrupted: got {size} of {expected} bytes; nothing was written"
        )
    return digest.hexdigest(), size
