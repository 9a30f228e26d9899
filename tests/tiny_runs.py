"""Tiny run directories made by `train` (a few updates of d_model 16 models on a word-for-word
toy corpus and a toy text, character vocabularies), for tests of the API and the commands."""

from __future__ import annotations

import random
from pathlib import Path

from aiayn.config import config_from_dict
from aiayn.data.tokenizer import Tokenizer
from aiayn.train.loop import train

WORDS = {"haus": "house", "katze": "cat", "hund": "dog", "rot": "red", "blau": "blue",
         "der": "the", "läuft": "runs", "im": "in the", "garten": "garden"}  # fmt: skip


def write_parallel(folder: Path, name: str, n: int, rng: random.Random) -> tuple[Path, Path]:
    sentences = [[rng.choice(sorted(WORDS)) for _ in range(rng.randint(1, 5))] for _ in range(n)]
    src, tgt = folder / f"{name}.de", folder / f"{name}.en"
    src.write_text("".join(" ".join(s) + "\n" for s in sentences))
    tgt.write_text("".join(" ".join(WORDS[w] for w in s) + "\n" for s in sentences))
    return src, tgt


def tiny_run(folder: Path, *, translation: bool, steps: int = 30) -> Path:
    """Train a tiny translation model (40 positions) or language model (32) into folder/run."""
    rng = random.Random(0)
    if translation:
        train_files = write_parallel(folder, "train", 200, rng)
        valid_files = write_parallel(folder, "valid", 8, rng)
        text = [p.read_text() for p in (*train_files, *valid_files)]
        data = dict(dataset="parallel", max_len=40)
        model = dict(n_encoder_layers=1, n_decoder_layers=2, max_len=40)
    else:
        for name, lines in (("train", 120), ("valid", 20)):
            words = [rng.choice(sorted(WORDS)) for _ in range(lines * 6)]
            (folder / f"{name}.txt").write_text(" ".join(words) + "\n")
        train_files, valid_files = (folder / "train.txt",), (folder / "valid.txt",)
        text = [(folder / "train.txt").read_text()]
        data = dict(dataset="text", seq_len=32)
        model = dict(kind="decoder-only", n_encoder_layers=0, n_decoder_layers=2, max_len=32,
                     norm_first=True, positions="learned")  # fmt: skip
    Tokenizer.train(text, vocab_size=64, model_type="char", path=folder / "tokenizer.model")
    raw = {
        "model": dict(d_model=16, n_heads=2, d_ff=32, dropout=0.0, **model),
        "data": dict(train_files=[str(p) for p in train_files],
                     valid_files=[str(p) for p in valid_files],
                     tokenizer=str(folder / "tokenizer.model"), max_tokens=256, **data),
        "train": dict(max_steps=steps, schedule="constant", lr=3e-3, warmup_steps=5,
                      eval_every=0, save_every=0, device="cpu", bleu=False, precision="fp32"),
    }  # fmt: skip
    run_dir = folder / "run"
    train(config_from_dict(raw), run_dir=run_dir, progress=False)
    return run_dir
