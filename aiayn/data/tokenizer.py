"""The subword vocabulary: a SentencePiece model (BPE, unigram or characters) shared by source and
target (§3.4, §5.1: "a shared source-target vocabulary"), with exact encode/decode round trips;
the interface every tokenizer of a run offers (`TextTokenizer`: this one, GPT-2's byte-level BPE
in bytelevel.py), and `load_tokenizer`, which finds a run's tokenizer by its file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import sentencepiece as spm

from aiayn.data.corpus import iter_lines
from aiayn.files import atomic_write

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
"""Special ids; they must equal `ModelConfig`'s `pad_id`, `unk_id`, `bos_id`, `eos_id`."""
TOKENIZER_FILE = "tokenizer.model"
"""Name of the tokenizer file inside a run or data folder."""
ModelType = Literal["bpe", "unigram", "char"]


class TextTokenizer(Protocol):
    """What the model's users need of a tokenizer: text <-> ids and the special ids."""

    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, *, target: bool = False) -> list[int]:
        """Ids of one text, no specials; `target`: cut as the target language (a pair of
        vocabularies, Marian) rather than the source (the same for a shared one)."""
        ...

    def encode_batch(self, texts: Sequence[str], *, target: bool = False) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str:
        """Target-language text of ids; padding, BOS and EOS are skipped."""
        ...

    def pieces(self, text: str) -> list[str]: ...

    def id_to_piece(self, token_id: int) -> str: ...

    def save_to(self, folder: str | Path) -> Path:
        """Write the tokenizer's file into `folder` (a run directory); returns its path."""
        ...


def load_tokenizer(folder: str | Path) -> TextTokenizer:
    """The tokenizer of a run (or data) folder, by its files: `tokenizer.model` (SentencePiece),
    `words.json` (words, `tokenizers`), `source.spm` + `target.spm` + `vocab.json` (Marian) or
    `tokenizer.json` (byte-level BPE, `tokenizers`).

    Raises:
        FileNotFoundError: The folder holds neither.
        ValueError: The file is not a tokenizer (names it).
    """
    from aiayn.data.bytelevel import BYTE_LEVEL_FILE, ByteLevelTokenizer
    from aiayn.data.marian_vocab import SOURCE_SPM, MarianVocabulary
    from aiayn.data.wordlevel import WORD_LEVEL_FILE, WordTokenizer

    folder = Path(folder)
    if (folder / TOKENIZER_FILE).is_file():
        return Tokenizer.load(folder / TOKENIZER_FILE)
    if (folder / WORD_LEVEL_FILE).is_file():
        return WordTokenizer.from_files(folder)
    if (folder / SOURCE_SPM).is_file():
        return MarianVocabulary.from_files(folder)
    if (folder / BYTE_LEVEL_FILE).is_file():
        return ByteLevelTokenizer.from_files(folder)
    raise FileNotFoundError(
        f"no tokenizer in {folder}: neither {TOKENIZER_FILE} nor {BYTE_LEVEL_FILE} "
        "(run `aiayn data prepare`, or `aiayn import` a pretrained model)"
    )


class Tokenizer:
    """Text <-> token ids through a SentencePiece model.

    Text is kept as is (cased, no Unicode normalisation, whitespace preserved) and characters
    never seen in training fall back to UTF-8 bytes, so `decode(encode(s)) == s` for every string
    (character models use `<unk>` instead of bytes).

    Args:
        processor: A loaded SentencePiece model whose special ids are `PAD_ID`..`EOS_ID`.
    """

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        self.processor = processor
        self.pad_id, self.unk_id = processor.pad_id(), processor.unk_id()
        self.bos_id, self.eos_id = processor.bos_id(), processor.eos_id()
        self._special = {self.pad_id, self.bos_id, self.eos_id}

    @classmethod
    def train(
        cls,
        texts_or_files: Iterable[str] | Iterable[Path] | Path,
        *,
        vocab_size: int,
        model_type: ModelType = "bpe",
        path: str | Path | None = None,
        num_threads: int | None = None,
        max_sentences: int | None = None,
    ) -> Tokenizer:
        """Learn a vocabulary from sentences.

        Args:
            texts_or_files: Sentences (`str`, one per item), or files (`Path`, plain or .gz, one
                sentence per line). For translation pass the source and the target side together:
                one joint vocabulary.
            vocab_size: Pieces including the four specials. For `char` an upper bound: the
                vocabulary is every character seen, plus specials and a newline piece.
            model_type: `bpe` (Sennrich et al. 2016, as the paper's WMT runs), `unigram`
                (Kudo 2018) or `char`.
            path: Where to save the model (`tokenizer.model`); None keeps it in memory.
            num_threads: Trainer threads; defaults to the CPU count.
            max_sentences: Learn from a random sample of this many sentences (SentencePiece
                keeps them as it reads: memory bounded on corpora of millions of lines);
                None: all of them.

        Raises:
            TypeError: `texts_or_files` is a single string.
            ValueError: SentencePiece rejects the input (e.g. `vocab_size` too large for it).
        """
        if isinstance(texts_or_files, str):
            raise TypeError("texts_or_files is one string; pass a list of sentences or Paths")
        if max_sentences is not None and max_sentences <= 100:
            raise ValueError(f"max_sentences must be over 100 (SentencePiece), got {max_sentences}")
        char = model_type == "char"
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(texts_or_files),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                character_coverage=1.0,
                byte_fallback=not char,
                add_dummy_prefix=not char,
                user_defined_symbols=["\n"] if char else [],
                hard_vocab_limit=not char,
                input_sentence_size=max_sentences or 0,
                shuffle_input_sentence=True,
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as error:
            raise ValueError(f"tokenizer training failed: {error}") from None
        tokenizer = cls(spm.SentencePieceProcessor(model_proto=model.getvalue()))
        if path is not None:
            tokenizer.save(path)
        return tokenizer

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a model written by `save` (or by SentencePiece itself)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer at {path} (run `aiayn data prepare` first)")
        try:
            processor = spm.SentencePieceProcessor(model_proto=path.read_bytes())
        except RuntimeError:
            raise ValueError(
                f"{path}: not a SentencePiece model (truncated or another file)"
            ) from None
        return cls(processor)

    def save(self, path: str | Path) -> Path:
        """Write the model file (conventionally `<run_dir>/tokenizer.model`); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, self.processor.serialized_model_proto())

    def save_to(self, folder: str | Path) -> Path:
        """Write `folder/tokenizer.model`; returns its path."""
        return self.save(Path(folder) / TOKENIZER_FILE)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included; the model's `vocab_size`."""
        return self.processor.get_piece_size()

    def encode(self, text: str, *, target: bool = False) -> list[int]:
        """Token ids of one sentence, without BOS/EOS (the batcher adds them); one vocabulary
        for both languages, so `target` changes nothing.

        Raises:
            ValueError: The text holds a lone surrogate (not valid Unicode).
        """
        check_unicode(text, "text")
        return self.processor.encode(text)

    def encode_batch(self, texts: Sequence[str], *, target: bool = False) -> list[list[int]]:
        """Token ids of many sentences (multi-threaded).

        Raises:
            ValueError: A text holds a lone surrogate, naming its index.
        """
        return self.processor.encode(check_texts(texts))

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids; pad, BOS and EOS are skipped."""
        return self.processor.decode([int(i) for i in ids if int(i) not in self._special])

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of a sentence (`▁` marks a preceding space)."""
        return self.processor.encode(text, out_type=str)

    def id_to_piece(self, token_id: int) -> str:
        """The piece of one id."""
        return self.processor.id_to_piece(token_id)


def check_unicode(text: str, what: str) -> None:
    """Refuse a string with a lone surrogate (U+D800..U+DFFF on its own), which no UTF-8 text
    holds: it comes from bytes decoded with `errors="surrogateescape"` (Python's stdin under a
    C locale) and would reach SentencePiece as an unencodable string.

    Raises:
        ValueError: Naming `what` and the character's position.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} is a {type(text).__name__}, not a str")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} holds a lone surrogate {text[error.start]!r} at character {error.start}: "
            "not valid Unicode (was it decoded with errors='surrogateescape'?)"
        ) from None


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, each checked by `check_unicode` (errors name the index)."""
    texts = list(texts)
    for i, text in enumerate(texts):
        check_unicode(text, f"text at index {i}")
    return texts


def _sentences(texts_or_files: Iterable[str] | Iterable[Path] | Path) -> Iterator[str]:
    items = [texts_or_files] if isinstance(texts_or_files, Path) else texts_or_files
    for item in items:
        if isinstance(item, Path):
            yield from iter_lines(item)  # streamed: corpora of millions of lines
        else:
            yield item
