"""`aiayn data prepare` and `aiayn data show` through `aiayn.cli.main`: on the real data, and on
small data roots the tests write to exercise every bad-input error.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.data.corpus import MULTI30K_SPLITS
from aiayn.data.tokenizer import TOKENIZER_FILE, Tokenizer


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory) -> tuple[Path, str]:
    """A de-en run of `data prepare` on the real Multi30k: (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("multi30k-de-en")
    args = ["multi30k", "--src", "de", "--tgt", "en", "--data-dir", str(data_dir), "-o", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # capsys is per test, this fixture per module
        main(["data", "prepare", *args, "--vocab-size", "2000"])
    return out, printed.getvalue()


def test_prepare_reports_sizes_percentiles_and_filters(prepared):
    out, printed = prepared
    lines = printed.splitlines()
    assert lines[0].startswith("multi30k de-en: bpe tokenizer, 2000 pieces, trained in ")
    for split, size in {"train": 29000, "val": 1014, "test2016": 1000}.items():
        stats = next(line for line in lines if line.startswith(f"{split}: {size} pairs, "))
        assert "source p50 " in stats and " p99 " in stats and "target p50 " in stats
        assert f"  {split}: kept {size} of {size} pairs; dropped 0 empty, 0 too long" in printed
    assert Tokenizer.load(out / TOKENIZER_FILE).vocab_size == 2000


def test_show_prints_examples_with_pieces(prepared, data_dir, capsys):
    out, _ = prepared
    main(["data", "show", "multi30k", "--data-dir", str(data_dir), "-o", str(out), "-n", "2"])
    printed = capsys.readouterr().out
    assert printed.count("pieces: ") == 4 and printed.count("ids:    [") == 4
    assert "text:   Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen\n" in printed
    assert "pieces: ▁Eine ▁Gruppe" in printed


def test_tinyshakespeare_character_tokenizer(data_dir, tmp_path, capsys):
    args = ["tinyshakespeare", "--data-dir", str(data_dir), "-o", str(tmp_path)]
    main(["data", "prepare", *args])
    printed = capsys.readouterr().out
    assert "tinyshakespeare: char tokenizer, 69 pieces" in printed
    assert "train: 1003854 characters, 1003854 tokens" in printed
    assert "val: 111540 characters, 111540 tokens" in printed
    main(["data", "show", *args, "-n", "1"])
    assert capsys.readouterr().out.count("pieces: ") == 1


def fake_multi30k(root: Path, lines: dict[str, list[bytes]] | None = None) -> Path:
    """A data root holding small de/en Multi30k files; `lines` overrides some ("val.en")."""
    for split, stem in MULTI30K_SPLITS.items():
        for lang, word in (("de", "Satz"), ("en", "sentence")):
            default = [f"{word} {i} mit {i * 7}".encode() for i in range(40)]
            body = b"".join(line + b"\n" for line in (lines or {}).get(f"{split}.{lang}", default))
            (root / "multi30k").mkdir(parents=True, exist_ok=True)
            (root / "multi30k" / f"{stem}.{lang}.gz").write_bytes(gzip.compress(body, mtime=0))
    return root


def prepare(root: Path, out: Path, *extra: str) -> None:
    args = ["multi30k", "--data-dir", str(root), "-o", str(out), "--vocab-size", "300"]
    main(["data", "prepare", *args, "--no-download", *extra])


def test_unequal_line_counts_stop_before_training(tmp_path, capsys):
    root = fake_multi30k(tmp_path / "root", {"val.en": [b"one", b"two"]})
    with pytest.raises(SystemExit) as exit_:
        prepare(root, tmp_path / "out")
    error = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"{root / 'multi30k' / 'val.de.gz'} has 40 lines" in error
    assert f"{root / 'multi30k' / 'val.en.gz'} has 2 lines" in error
    assert not (tmp_path / "out" / TOKENIZER_FILE).exists()


def test_invalid_utf8_names_file_and_line(tmp_path, capsys):
    root = fake_multi30k(tmp_path / "root", {"test2016.en": [b"fine", b"bro\xc3ken", b"fine"] * 20})
    with pytest.raises(SystemExit):
        prepare(root, tmp_path / "out")
    assert "test_2016_flickr.en.gz:2: invalid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "out" / TOKENIZER_FILE).exists()


def test_filters_skip_and_report_or_refuse(tmp_path, capsys):
    src = [f"Satz {i}".encode() for i in range(40)]
    src[2], src[5], src[7] = b"", b"Satz " * 100, b"Satz " * 30
    root = fake_multi30k(tmp_path / "root", {"train.de": src})
    prepare(root, tmp_path / "out", "--max-len", "64", "--max-ratio", "3")
    report = "train: kept 37 of 40 pairs; dropped 1 empty, 1 too long, 1 bad length ratio"
    assert f"\n  {report}; truncated 0\n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        prepare(root, tmp_path / "out", "--policy", "error")
    train = root / "multi30k" / "train"
    assert f"{train}.de.gz:3 / {train}.en.gz:3: empty sentence" in capsys.readouterr().err


def test_missing_files_without_download(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare(tmp_path, tmp_path / "out")
    assert "train.de.gz is missing (downloading is off" in capsys.readouterr().err


@pytest.mark.parametrize(("model_type", "extra"), [("bpe", []), ("bpe", ["--max-sentences",
                         "150"]), ("word", [])])  # fmt: skip
def test_the_tokenizer_command_learns_from_plain_and_gzip_files(tmp_path, capsys, model_type,
                                                                 extra):  # fmt: skip
    import gzip

    from aiayn.cli import main
    from aiayn.data.tokenizer import load_tokenizer

    de = [f"der Hund {i} läuft im Garten" for i in range(40)]
    en = [f"the dog {i} runs in the garden" for i in range(40)]
    (tmp_path / "train.de").write_text("\n".join(de) + "\n")
    (tmp_path / "train.en.gz").write_bytes(gzip.compress(("\n".join(en) + "\n").encode()))
    files = [str(tmp_path / "train.de"), str(tmp_path / "train.en.gz")]
    main(["data", "tokenizer", "--files", *files, "-o", str(tmp_path / "tok"),
          "--vocab-size", "400", "--model-type", model_type, *extra])  # fmt: skip
    out = capsys.readouterr().out
    assert f"{model_type} tokenizer" in out and "from 2 files" in out
    assert ("a sample of 150 lines" in out) == bool(extra)
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert tokenizer.decode(tokenizer.encode("the dog runs")) == "the dog runs"
    if model_type == "word":
        assert tokenizer.pieces("läuft garden") == ["läuft", "garden"]


def test_the_tokenizer_command_names_a_missing_file(tmp_path, capsys):
    from aiayn.cli import main

    with pytest.raises(SystemExit):
        main(["data", "tokenizer", "--files", str(tmp_path / "nope.en"), "-o", str(tmp_path)])
    assert "nope.en: no such file" in capsys.readouterr().err
