"""Models for decoding tests: tiny random Transformers and language models, and a scripted
encoder-decoder whose next-token distributions are fixed by a table (fairseq's test style)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from aiayn.model.config import ModelConfig
from aiayn.model.transformer import build_model

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def tiny_config(kind: str = "encoder-decoder", **changes) -> ModelConfig:
    base = dict(
        kind=kind, vocab_size=13, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2,
        n_decoder_layers=2, dropout=0.0, max_len=40,
    )  # fmt: skip
    if kind == "decoder-only":
        base.update(norm_first=True, positions="learned", activation="gelu", init="gpt2")
    base.update(changes)
    return ModelConfig(**base)


def tiny_model(kind: str = "encoder-decoder", seed: int = 0, **changes) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(tiny_config(kind, **changes)).eval()
    # Random init spreads probability thinly; sharper logits make searches take real decisions.
    with torch.no_grad():
        model.out_proj.weight.mul_(3.0)
    return model


def sources(lengths: list[int], vocab: int = 13, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Right-padded source ids (each row: random words, then EOS) and their valid mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    src = torch.full((len(lengths), width), PAD)
    for row, n in enumerate(lengths):
        src[row, : n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[row, n - 1] = EOS
    return src, src != PAD


Script = Callable[[tuple[int, ...], tuple[int, ...]], dict[int, float]]
"""(source ids, output so far) -> {token: probability}; tokens left out get probability 0."""


class ScriptedCache:
    """Stands in for a DecoderCache: remembers every row's tokens so far."""

    def __init__(self) -> None:
        self.tokens: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.size(1)

    def append(self, tokens: Tensor) -> Tensor:
        self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], 1)
        return self.tokens

    def reorder(self, index: Tensor) -> None:
        self.tokens = self.tokens[index]

    reorder_self = reorder


class ScriptedModel(nn.Module):
    """An encoder-decoder whose next-token probabilities come from `script`; it counts the
    decoder calls and the rows they computed."""

    def __init__(self, script: Script, vocab_size: int = 6, max_len: int = 64) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab_size, d_model=8, n_heads=1, max_len=max_len)
        self.script = script
        self.calls, self.rows = 0, 0

    def new_cache(self) -> ScriptedCache:
        return ScriptedCache()

    def encode(self, src: Tensor, src_valid: Tensor | None = None) -> Tensor:
        return src[:, :, None].float()  # the "memory" is the source itself

    def decode(self, tgt_in, memory, src_valid, *, tgt_valid=None, cache=None) -> Tensor:
        self.calls += 1
        self.rows += tgt_in.size(0)
        prefixes = tgt_in if cache is None else cache.append(tgt_in)
        logits = torch.full((tgt_in.size(0), 1, self.config.vocab_size), float("-inf"))
        for row, (prefix, source) in enumerate(zip(prefixes.tolist(), memory, strict=True)):
            tokens = source[:, 0] if src_valid is None else source[:, 0][src_valid[row]]
            valid = tokens.long().tolist()
            for token, p in self.script(tuple(valid), tuple(prefix[1:])).items():
                logits[row, 0, token] = math.log(p)
        return logits
