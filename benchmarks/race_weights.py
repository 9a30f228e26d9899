"""One set of encoder-decoder weights in every format the decoding race reads: aiayn safetensors,
the hf-marian export (`transformers.MarianMTModel`) and CTranslate2 conversions of that export
(float32 and int8, `benchmarks.ct2_convert`), all written once into a work folder by
`write_weights`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import safetensors.torch
import torch

from aiayn.convert.marian import export_hf_marian
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import Transformer, build_model
from benchmarks.engines import Size

AIAYN_DIR, HF_DIR = "aiayn", "hf-marian"
CT2_DIRS = {"ct2-float32": "float32", "ct2-int8": "int8"}  # engine -> quantization
WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE = "model.safetensors", "model_config.json", "vocab.json"


def random_model(size: Size, seed: int) -> Transformer:
    """A randomly initialised aiayn encoder-decoder of `size` (fixed seed), in eval mode."""
    config = ModelConfig(
        vocab_size=size.vocab_size, d_model=size.d_model, n_heads=size.n_heads, d_ff=size.d_ff,
        n_encoder_layers=size.n_layers, n_decoder_layers=size.n_layers, max_len=512,
    )  # fmt: skip
    torch.manual_seed(seed)
    return build_model(config).eval()


def filler_vocabulary(config: ModelConfig) -> dict[str, int]:
    """A piece per id for a model without a tokenizer: the special pieces SentencePiece uses,
    then `t<id>`, so every id has its own token string (CTranslate2 reads token strings)."""
    special = {config.pad_id: "<pad>", config.unk_id: "<unk>", config.bos_id: "<s>",
               config.eos_id: "</s>"}  # fmt: skip
    return {special.get(i, f"t{i}"): i for i in range(config.vocab_size)}


def write_weights(
    model: Transformer, work: Path, *, tokenizer_model: bytes | None = None, ct2: bool = True
) -> None:
    """Write `model` as aiayn safetensors, an hf-marian export and (`ct2`) two CTranslate2
    models.

    Args:
        model: The encoder-decoder every engine will run.
        work: The work folder; engines find their weights under it (`engine_dir`).
        tokenizer_model: A serialized SentencePiece model whose pieces name the ids (a trained
            run's); without one, `filler_vocabulary` names them.
    """
    aiayn_dir = work / AIAYN_DIR
    aiayn_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(model, str(aiayn_dir / WEIGHTS_FILE))
    (aiayn_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.config), indent=1))
    hf_dir = export_hf_marian(model, work / HF_DIR, tokenizer_model=tokenizer_model)
    if tokenizer_model is None:
        vocab = filler_vocabulary(model.config)
        (hf_dir / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    if not ct2:
        return
    from benchmarks.ct2_convert import AiaynConverter, Vocabulary

    vocabulary = Vocabulary(read_vocabulary(hf_dir), model.config)
    for engine, quantization in CT2_DIRS.items():
        converter = AiaynConverter(hf_dir, vocabulary)
        converter.convert(str(work / engine), quantization=quantization, force=True)


def load_aiayn(work: Path) -> Transformer:
    """The aiayn model `write_weights` saved, in eval mode."""
    config = ModelConfig(**json.loads((work / AIAYN_DIR / CONFIG_FILE).read_text()))
    model = build_model(config)
    safetensors.torch.load_model(model, str(work / AIAYN_DIR / WEIGHTS_FILE))
    return model.eval()


def read_vocabulary(hf_dir: Path) -> list[str]:
    """The token string of every id (an hf-marian export's `vocab.json`), in id order."""
    vocab = json.loads((hf_dir / VOCAB_FILE).read_text())
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"{hf_dir / VOCAB_FILE}: ids are not 0..{len(tokens) - 1}")
    return tokens
