"""A word-level vocabulary, as the PyTorch word language model example builds it for WikiText-2
(`word_language_model/data.py`): words are split on white space, every end of line is the token
`<eos>`, and WikiText's own `<unk>` (its authors' stand-in for rare words) is the unknown token,
so the text's `<unk>` and a word never seen in training are one id. Through HuggingFace's
`tokenizers` (a `WordLevel` model), saved as `words.json` (JSON, nothing pickled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from aiayn.data.corpus import split_lines
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, check_texts, check_unicode
from aiayn.files import atomic_write

WORD_LEVEL_FILE = "words.json"
SPECIALS = {PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "<eos>"}
"""The special tokens at the ids every tokenizer of a run uses; `<eos>` ends a line."""


class WordTokenizer:
    """Text <-> word ids. A newline is `<eos>` (ids of "a b\\nc\\n" are a, b, <eos>, c, <eos>),
    so a text's lines are sentences to a language model, as in the PyTorch example; a sentence
    without a newline (translation) gets no `<eos>` here, the batcher adds it.

    Args:
        tokenizer: A `tokenizers.Tokenizer` with a `WordLevel` model whose first four ids are
            `SPECIALS`.
    """

    def __init__(self, tokenizer: HFTokenizer) -> None:
        found = {i: tokenizer.id_to_token(i) for i in SPECIALS}
        if found != SPECIALS:
            raise ValueError(f"the word vocabulary's first ids are {found}, not {SPECIALS}")
        self.backend = tokenizer
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    @classmethod
    def train(
        cls, texts: Iterable[str], *, vocab_size: int | None = None, path: str | Path | None = None
    ) -> WordTokenizer:
        """Every word of `texts` (lines), the most frequent first (ties: first seen first), up
        to `vocab_size` ids including the specials (None: all); `path` saves it (`words.json`).
        Counted here rather than by `tokenizers`' trainer, which moves `<unk>` to a new id when
        the text holds it, as WikiText does."""
        split = pre_tokenizers.WhitespaceSplit()
        counts = Counter(
            word for text in texts for word, _ in split.pre_tokenize_str(text)
        )  # fmt: skip
        vocab = {token: i for i, token in SPECIALS.items()}
        for word, _ in counts.most_common():
            if vocab_size is not None and len(vocab) >= vocab_size:
                break
            vocab.setdefault(word, len(vocab))
        tokenizer = HFTokenizer(models.WordLevel(vocab, unk_token=SPECIALS[UNK_ID]))
        tokenizer.pre_tokenizer = split
        word = cls(tokenizer)
        if path is not None:
            word.save(path)
        return word

    @classmethod
    def from_files(cls, folder: str | Path) -> WordTokenizer:
        """Load `folder/words.json`.

        Raises:
            FileNotFoundError: It is not there.
            ValueError: It is not a word-level tokenizers file (names it).
        """
        file = Path(folder) / WORD_LEVEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no word vocabulary at {file}")
        try:
            return cls(HFTokenizer.from_file(str(file)))
        except Exception as error:  # tokenizers raises its own exception type
            raise ValueError(f"{file}: not a word-level tokenizers file ({error})") from None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, target: bool = False) -> list[int]:
        """Word ids; each newline becomes `<eos>`."""
        check_unicode(text, "text")
        lines = split_lines(text)
        ends = text.endswith("\n")
        ids: list[int] = []
        for n, encoded in enumerate(self.backend.encode_batch(lines, add_special_tokens=False)):
            ids += encoded.ids
            if n < len(lines) - 1 or ends:
                ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str], *, target: bool = False) -> list[list[int]]:
        return [self.encode(text) for text in check_texts(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces; pad, BOS and EOS are skipped."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return " ".join(self.backend.id_to_token(int(i)) for i in ids if int(i) not in skip)

    def pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode(text)]

    def id_to_piece(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary (conventionally `<run_dir>/words.json`) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, self.backend.to_str())

    def save_to(self, folder: str | Path) -> Path:
        return self.save(Path(folder) / WORD_LEVEL_FILE)
