"""GPT-2's byte-level BPE (Radford et al. 2019, §2.2), through HuggingFace's `tokenizers`: text
as UTF-8 bytes mapped to printable characters, split by GPT-2's pattern, merged by the learned
merges; decoding maps the bytes back, so `decode(encode(s)) == s` for every string.

Saved in a run directory as `tokenizer.json` (the `tokenizers` format: JSON, nothing pickled).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from aiayn.data.tokenizer import check_texts, check_unicode
from aiayn.files import atomic_write

BYTE_LEVEL_FILE = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"
"""GPT-2's only special token: it starts an empty prompt and ends a text."""


class ByteLevelTokenizer:
    """Byte-level BPE with GPT-2's one special token, which serves as BOS, EOS, padding and
    unknown (byte-level BPE has no unknown input).

    Args:
        tokenizer: A `tokenizers.Tokenizer` holding `<|endoftext|>`.
    """

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.backend = tokenizer
        end = tokenizer.token_to_id(END_OF_TEXT)
        if end is None:
            raise ValueError(f"the byte-level vocabulary has no {END_OF_TEXT} token")
        self.pad_id = self.unk_id = self.bos_id = self.eos_id = end

    @classmethod
    def from_files(cls, folder: str | Path) -> ByteLevelTokenizer:
        """Load `tokenizer.json`, else GPT-2's `vocab.json` + `merges.txt`, from a folder.

        Raises:
            FileNotFoundError: Neither is there.
            ValueError: A file is not what it should be (names it).
        """
        folder = Path(folder)
        if (folder / BYTE_LEVEL_FILE).is_file():
            file = folder / BYTE_LEVEL_FILE
            try:
                return cls(HFTokenizer.from_file(str(file)))
            except Exception as error:  # tokenizers raises its own exception type
                raise ValueError(f"{file}: not a tokenizers file ({error})") from None
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        missing = [p.name for p in (vocab, merges) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: no {BYTE_LEVEL_FILE} and no {' and '.join(missing)} (a byte-level "
                "BPE tokenizer needs tokenizer.json, or vocab.json with merges.txt)"
            )
        try:
            bpe = models.BPE.from_file(str(vocab), str(merges))
        except Exception as error:
            raise ValueError(f"{vocab} / {merges}: not a BPE vocabulary ({error})") from None
        return cls(gpt2_pipeline(HFTokenizer(bpe)))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, target: bool = False) -> list[int]:
        check_unicode(text, "text")
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, target: bool = False) -> list[list[int]]:
        encoded = self.backend.encode_batch(check_texts(texts), add_special_tokens=False)
        return [e.ids for e in encoded]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids; `<|endoftext|>` is skipped."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def pieces(self, text: str) -> list[str]:
        """The BPE pieces, in GPT-2's byte alphabet (`Ġ` is a space)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def id_to_piece(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)

    def save_to(self, folder: str | Path) -> Path:
        """Write `folder/tokenizer.json` atomically; returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write(folder / BYTE_LEVEL_FILE, self.backend.to_str())


def gpt2_pipeline(tokenizer: HFTokenizer) -> HFTokenizer:
    """GPT-2's settings around a byte-level BPE model: no prefix space, byte-level decoding,
    `<|endoftext|>` as a special token (matched whole in text, as GPT-2's tokenizer does)."""
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([END_OF_TEXT])
    return tokenizer
