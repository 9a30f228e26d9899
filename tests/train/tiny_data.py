"""A tiny word-for-word "translation" corpus and a tiny text, with character tokenizers, and
configs for models small enough to train in a second on a CPU."""

from __future__ import annotations

import random
from pathlib import Path

from aiayn.config import RunConfig, config_from_dict
from aiayn.data.tokenizer import Tokenizer

LEXICON = {
    "der": "the", "die": "the", "haus": "house", "katze": "cat", "hund": "dog", "mann": "man",
    "frau": "woman", "kind": "child", "läuft": "runs", "spielt": "plays", "sitzt": "sits",
    "auf": "on", "im": "in the", "garten": "garden", "rot": "red", "blau": "blue",
}  # fmt: skip


def write_corpus(folder: Path, n_train: int = 240, n_valid: int = 12, seed: int = 0) -> Path:
    """`train.de/en`, `valid.de/en` (word-by-word translations) and a character tokenizer."""
    rng = random.Random(seed)
    words = sorted(LEXICON)
    sentences = []
    for split, n in (("train", n_train), ("valid", n_valid)):
        src, tgt = [], []
        for _ in range(n):
            sentence = [rng.choice(words) for _ in range(rng.randint(1, 6))]
            src.append(" ".join(sentence))
            tgt.append(" ".join(LEXICON[w] for w in sentence))
        (folder / f"{split}.de").write_text("\n".join(src) + "\n")
        (folder / f"{split}.en").write_text("\n".join(tgt) + "\n")
        sentences += src + tgt
    Tokenizer.train(sentences, vocab_size=64, model_type="char", path=folder / "tokenizer.model")
    return folder


def write_text_corpus(folder: Path, seed: int = 1) -> Path:
    """`train.txt` (100 lines), `valid.txt` (20 lines) and a character tokenizer."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(sorted(LEXICON)) for _ in range(8)) for _ in range(120)]
    (folder / "train.txt").write_text("\n".join(lines[:100]) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines[100:]) + "\n")
    Tokenizer.train(lines, vocab_size=64, model_type="char", path=folder / "tokenizer.model")
    return folder


def tiny_config(corpus: Path, **sections: dict) -> RunConfig:
    """A 1+1-layer d_model 16 translation config on `corpus`; `sections` update its fields.
    fp32, not `auto`: the tests behave the same on CPUs with and without native bf16."""
    raw = {
        "model": dict(d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
                      max_len=64, dropout=0.1),
        "data": dict(dataset="parallel", train_files=[str(corpus / "train.de"),
                     str(corpus / "train.en")], valid_files=[str(corpus / "valid.de"),
                     str(corpus / "valid.en")], tokenizer=str(corpus / "tokenizer.model"),
                     max_len=64, max_tokens=256),
        "train": dict(max_steps=20, schedule="inverse_sqrt", lr=3e-3, warmup_steps=10,
                      eval_every=0, save_every=0, log_every=1, device="cpu", precision="fp32"),
    }  # fmt: skip
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    return config_from_dict(raw, source="tiny_config")


def tiny_lm_config(text_corpus: Path, **sections: dict) -> RunConfig:
    """A 2-layer d_model 16 character language model on `text_corpus`."""
    raw = {
        "model": dict(kind="decoder-only", d_model=16, n_heads=2, d_ff=32, n_encoder_layers=0,
                      n_decoder_layers=2, max_len=32, dropout=0.1),
        "data": dict(dataset="text", train_files=[str(text_corpus / "train.txt")],
                     valid_files=[str(text_corpus / "valid.txt")],
                     tokenizer=str(text_corpus / "tokenizer.model"), seq_len=32, max_tokens=256),
        "train": dict(max_steps=20, schedule="inverse_sqrt", lr=3e-3, warmup_steps=10,
                      eval_every=0, save_every=0, log_every=1, device="cpu", precision="fp32"),
    }  # fmt: skip
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    return config_from_dict(raw, source="tiny_lm_config")
