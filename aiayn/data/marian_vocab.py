"""Marian's vocabulary (OPUS-MT): one shared list of pieces (`vocab.json`, or Marian-NMT's
`*.vocab.yml`) over two SentencePiece models, `source.spm` to cut the source language and
`target.spm` for the target's; source text is cut into pieces by the one, target pieces are glued
back into text by the other. EOS is `</s>` (id 0), padding `<pad>` (usually the last id), which
also starts decoding.

Saved in a run directory as `source.spm`, `target.spm` and `vocab.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from aiayn.data.tokenizer import check_texts, check_unicode
from aiayn.files import atomic_write

VOCAB_FILE, SOURCE_SPM, TARGET_SPM = "vocab.json", "source.spm", "target.spm"
START_FILE = "decoder_start.json"
"""`{"decoder_start_id": N}`, kept in a run directory when decoding starts elsewhere than at
`<pad>` (a model of ours exported to Marian's layout starts from its BOS)."""
LANGUAGE_CODE = re.compile(">>.+<<")
"""A target-language tag (`>>fra<<`) at the start of a source sentence of a multilingual model:
kept as one piece, as transformers' MarianTokenizer does."""


class MarianVocabulary:
    """Text <-> ids through Marian's two SentencePiece models and shared vocabulary.

    Args:
        vocab: Piece -> id (ids 0..n-1, no gaps).
        source, target: The two loaded SentencePiece models.
        where: What to name in errors (the folder).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        source: spm.SentencePieceProcessor,
        target: spm.SentencePieceProcessor,
        where: str = "vocab.json",
        *,
        start_id: int | None = None,
    ) -> None:
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"{where}: the ids are not 0..{len(vocab) - 1} without gaps")
        missing = [s for s in ("</s>", "<unk>", "<pad>") if s not in vocab]
        if missing:
            raise ValueError(f"{where}: the vocabulary lacks {', '.join(missing)}")
        self.vocab, self.source, self.target = vocab, source, target
        self.pieces_by_id = [""] * len(vocab)
        for piece, i in vocab.items():
            self.pieces_by_id[i] = piece
        self.eos_id, self.unk_id, self.pad_id = vocab["</s>"], vocab["<unk>"], vocab["<pad>"]
        self.bos_id = self.pad_id if start_id is None else start_id  # Marian starts from <pad>
        if not 0 <= self.bos_id < len(vocab):
            raise ValueError(
                f"{where}: the decoder start id {self.bos_id} is not in the vocabulary"
            )
        self._special = {self.eos_id, self.pad_id}

    @classmethod
    def from_files(
        cls, folder: str | Path, *, vocab: dict[str, int] | None = None, start_id: int | None = None
    ) -> MarianVocabulary:
        """Load `vocab.json` (or Marian-NMT's `*.vocab.yml`; or use `vocab` as given),
        `source.spm` and `target.spm`; decoding starts at `start_id`, else the id in
        `decoder_start.json`, else `<pad>`.

        Raises:
            FileNotFoundError: A file is missing (named).
            ValueError: A file is not what it should be (named).
        """
        folder = Path(folder)
        vocab = read_vocabulary(folder) if vocab is None else vocab
        processors = []
        for name in (SOURCE_SPM, TARGET_SPM):
            file = folder / name
            if not file.is_file():
                raise FileNotFoundError(
                    f"{folder}: no {name} (Marian needs source.spm and target.spm)"
                )
            try:
                processors.append(spm.SentencePieceProcessor(model_proto=file.read_bytes()))
            except RuntimeError:
                raise ValueError(f"{file}: not a SentencePiece model") from None
        if start_id is None and (folder / START_FILE).is_file():
            try:
                start_id = int(json.loads((folder / START_FILE).read_text())["decoder_start_id"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{folder / START_FILE}: not a decoder start ({error})") from None
        return cls(vocab, *processors, where=str(folder), start_id=start_id)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, *, target: bool = False) -> list[int]:
        """Ids of one sentence (source side unless `target`), without EOS."""
        check_unicode(text, "text")
        return self._ids(text, self.target if target else self.source)

    def encode_batch(self, texts: Sequence[str], *, target: bool = False) -> list[list[int]]:
        processor = self.target if target else self.source
        return [self._ids(text, processor) for text in check_texts(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        """Target text of ids; `</s>` and `<pad>` are skipped."""
        pieces = [self.pieces_by_id[int(i)] for i in ids if int(i) not in self._special]
        return self.target.decode_pieces(pieces)

    def pieces(self, text: str) -> list[str]:
        return [self.pieces_by_id[i] for i in self.encode(text)]

    def id_to_piece(self, token_id: int) -> str:
        return self.pieces_by_id[token_id]

    def save_to(self, folder: str | Path) -> Path:
        """Write `vocab.json`, `source.spm` and `target.spm` atomically; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / SOURCE_SPM, self.source.serialized_model_proto())
        atomic_write(folder / TARGET_SPM, self.target.serialized_model_proto())
        atomic_write(folder / VOCAB_FILE, json.dumps(self.vocab, ensure_ascii=False, indent=1))
        if self.bos_id != self.pad_id:
            atomic_write(folder / START_FILE, json.dumps({"decoder_start_id": self.bos_id}))
        return folder

    def _ids(self, text: str, processor: spm.SentencePieceProcessor) -> list[int]:
        match = LANGUAGE_CODE.match(text)
        code = [match.group(0)] if match else []
        pieces = code + processor.encode(LANGUAGE_CODE.sub("", text), out_type=str)
        return [self.vocab.get(piece, self.unk_id) for piece in pieces]


def read_vocabulary(folder: Path) -> dict[str, int]:
    """`vocab.json`, else the one `*.vocab.yml` Marian-NMT writes (piece: id per line)."""
    file = folder / VOCAB_FILE
    if file.is_file():
        try:
            vocab = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{file}: not valid JSON ({error})") from None
    else:
        found = sorted(folder.glob("*.vocab.yml"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"{folder}: no {VOCAB_FILE} and {'no' if not found else 'more than one'} "
                "*.vocab.yml (Marian's shared vocabulary)"
            )
        file = found[0]
        import yaml

        try:  # every key a string, as Marian means it (a piece `no` is not False)
            raw = yaml.load(file.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
            vocab = {str(k): int(v) for k, v in raw.items()}
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError, ValueError) as error:
            raise ValueError(f"{file}: not a Marian vocabulary ({error})") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
    ):
        raise ValueError(f"{file}: not a piece -> id mapping")
    return vocab
