"""Corpora: readers and their errors on files the tests write, the named data sets on the real
data, and downloads from a local HTTP server (checksum pass and fail, interrupted transfer).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from aiayn.data import corpus
from aiayn.data.corpus import (
    DownloadError,
    data_root,
    fetch,
    multi30k_files,
    read_lines,
    read_parallel,
    split_text,
    tinyshakespeare_text,
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def test_data_root_prefers_argument_then_env_then_cache(tmp_path, monkeypatch):
    (tmp_path / "arg").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("AIAYN_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("AIAYN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root(None) == tmp_path / "cache" / "aiayn"


def test_a_data_dir_that_does_not_exist_is_named_and_never_created(tmp_path, monkeypatch):
    typo = tmp_path / "dtaa"
    with pytest.raises(ValueError, match=f"data.data_dir \\(--data-dir\\) {typo} does not exist"):
        multi30k_files("val", "de", typo, base_url="http://127.0.0.1:9/never/")
    monkeypatch.setenv("AIAYN_DATA", str(typo))
    with pytest.raises(ValueError, match=f"AIAYN_DATA {typo} does not exist"):
        multi30k_files("val", "de", base_url="http://127.0.0.1:9/never/")
    assert not typo.exists()


def test_nothing_is_downloaded_into_a_chosen_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("AIAYN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="data.data_dir is set, so nothing is downloaded"):
        multi30k_files("val", "de", tmp_path, base_url="http://127.0.0.1:9/never/")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["plain.txt", "packed.txt.gz"])
def test_read_lines_plain_and_gzip(tmp_path, name):
    text = "Ein Hund.\r\nZwei\u2028Katzen.\n\nEnde"
    assert read_lines(write(tmp_path / name, text.encode())) == [
        "Ein Hund.",
        "Zwei\u2028Katzen.",  # only \n ends a line, so alignment survives
        "",
        "Ende",
    ]
    assert read_lines(write(tmp_path / ("empty" + name), b"")) == []


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    path = write(tmp_path / name, b"eins\nzwei\ndr\xffei\nvier\n")
    with pytest.raises(ValueError, match=rf"{name}:3: invalid UTF-8"):
        read_lines(path)


def test_broken_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"a sentence\n" * 100)[:-20])
    with pytest.raises(ValueError, match="broken.gz: not a valid gzip file"):
        read_lines(path)


def test_parallel_files_of_different_length_name_both_files_and_counts(tmp_path):
    src = write(tmp_path / "train.de", b"a\nb\nc\n")
    tgt = write(tmp_path / "train.en", b"a\nb\n")
    assert read_parallel(src, src) == [("a", "a"), ("b", "b"), ("c", "c")]
    with pytest.raises(ValueError) as error:
        read_parallel(src, tgt)
    assert f"{src} has 3 lines" in str(error.value)
    assert f"{tgt} has 2 lines" in str(error.value)


def test_multi30k_splits_from_the_data_dir(data_dir):
    counts = {"train": 29000, "val": 1014, "test2016": 1000}
    for split, count in counts.items():
        for lang in corpus.MULTI30K_LANGS:
            path = multi30k_files(split, lang, data_dir, download=False)
            assert path.parent == data_dir / "multi30k"
            if split != "train":
                assert len(read_lines(path)) == count
    pairs = read_parallel(*(multi30k_files("train", lang, data_dir) for lang in ("de", "en")))
    assert len(pairs) == counts["train"]
    assert pairs[0][1] == "Two young, White males are outside near many bushes."


def test_multi30k_rejects_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown Multi30k split 'test'"):
        multi30k_files("test", "de", tmp_path)
    with pytest.raises(ValueError, match="unknown Multi30k language 'es'"):
        multi30k_files("val", "es", tmp_path)
    with pytest.raises(FileNotFoundError, match="val.de.gz is missing"):
        multi30k_files("val", "de", tmp_path, download=False)


def test_tinyshakespeare_split_like_nanogpt(data_dir):
    text = tinyshakespeare_text(data_dir, download=False)
    assert len(text) == 1_115_394 and len(set(text)) == 65
    train, val = split_text(text, "train"), split_text(text, "val")
    assert len(train) == int(0.9 * len(text)) and train + val == text
    with pytest.raises(ValueError, match="unknown split 'test'"):
        split_text(text, "test")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the data folder; under /truncated/ it promises a file but sends only half of it."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if not self.path.startswith("/truncated/"):
            return super().do_GET()
        data = Path(self.translate_path(self.path.removeprefix("/truncated"))).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(data_dir):
    """Base URL of an HTTP server on 127.0.0.1 serving the real data folder."""
    handler = functools.partial(Handler, directory=str(data_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_verifies_and_writes(server, data_dir, tmp_path):
    dest = tmp_path / "sub" / "val.en.gz"
    sha = corpus.MULTI30K_SHA256["val.en.gz"]
    assert fetch(f"{server}/multi30k/val.en.gz", dest, sha) == dest
    assert dest.read_bytes() == (data_dir / "multi30k" / "val.en.gz").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["val.en.gz"]


def test_named_sets_download_when_missing(server, tmp_path):
    path = multi30k_files("test2016", "cs", tmp_path, download=True, base_url=f"{server}/multi30k/")
    assert path == tmp_path / "multi30k" / "test_2016_flickr.cs.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == corpus.MULTI30K_SHA256[path.name]
    text = tinyshakespeare_text(tmp_path, download=True, url=f"{server}/tinyshakespeare/input.txt")
    assert text.startswith("First Citizen:\n") and len(text) == 1_115_394


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url = f"{server}/multi30k/val.de.gz"
    with pytest.raises(DownloadError, match=f"sha256 mismatch for {url}: expected 0+, got"):
        fetch(url, tmp_path / "val.de.gz", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    url = f"{server}/truncated/multi30k/val.de.gz"
    with pytest.raises(DownloadError, match="interrupted: got 12340 of 24681 bytes") as error:
        fetch(url, tmp_path / "val.de.gz", corpus.MULTI30K_SHA256["val.de.gz"])
    assert url in str(error.value) and "nothing was written" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        multi30k_files("val", "de", tmp_path, download=True, base_url=f"{server}/nowhere/")
    assert list((tmp_path / "multi30k").iterdir()) == []
