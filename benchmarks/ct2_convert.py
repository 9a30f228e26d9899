"""CTranslate2 conversion of aiayn's hf-marian export (`aiayn export --format hf-marian`).

CTranslate2's registered Marian loader is written for OPUS-MT checkpoints: it expects `<pad>` as
the last id, cuts the last row off the embedding and starts the decoder from a zero vector
(OPUS-MT starts from pad, whose embedding is zero). Our export keeps the paper's layout (pad 0,
the decoder starting from BOS's embedding, `decoder_start_token_id`), which is exactly what
CTranslate2's BART loader reads once the embedding layer norm is off and post-norm is on.
Imported only by the process that converts: ctranslate2 brings its own OpenMP runtime.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from ctranslate2.converters.transformers import BartLoader, TransformersConverter
from ctranslate2.specs import TransformerSpec

from aiayn.model.config import ModelConfig


class Vocabulary:
    """What CTranslate2's loaders read from a transformers tokenizer: token strings by id and
    the special tokens."""

    def __init__(self, tokens: list[str], config: ModelConfig) -> None:
        self.tokens = tokens
        self.bos_token, self.eos_token = tokens[config.bos_id], tokens[config.eos_id]
        self.unk_token, self.pad_token = tokens[config.unk_id], tokens[config.pad_id]

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.tokens[token_id]


class AiaynMarianLoader(BartLoader):
    """BART's loader for our Marian export: post-norm (§3.1), no layer norm on the embeddings,
    the decoder starting from the embedding of `decoder_start_token_id` (BOS)."""

    @property
    def architecture_name(self) -> str:
        return "MarianMTModel"

    def get_model_spec(self, model: transformers.MarianMTModel) -> TransformerSpec:
        model.config.normalize_before = False
        model.config.normalize_embedding = False
        return super().get_model_spec(model)


class AiaynConverter(TransformersConverter):
    """CTranslate2's transformers converter, reading `hf_dir` with `AiaynMarianLoader` and the
    token strings of `vocabulary` (not transformers' MarianTokenizer, which needs .spm files)."""

    def __init__(self, hf_dir: str | Path, vocabulary: Vocabulary) -> None:
        super().__init__(str(hf_dir))
        self.vocabulary = vocabulary

    def _load(self) -> TransformerSpec:
        with torch.no_grad():
            model = self.load_model(transformers.MarianMTModel, self._model_name_or_path)
            return AiaynMarianLoader()(model, self.vocabulary)
