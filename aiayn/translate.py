"""Sentences in, translations out: tokenise, cut or refuse inputs longer than the model's
positions, sort and batch by tokens, decode (`aiayn.generate.search.decode`), detokenise. The
one path from text to translations: validation during training, `TextModel.translate` and
`aiayn evaluate` all run it, so validation BLEU and `aiayn evaluate` agree.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from tqdm import tqdm

from aiayn.data.batching import TokenBatchSampler, collate
from aiayn.data.tokenizer import TextTokenizer
from aiayn.generate.compiled import CompiledStep
from aiayn.generate.options import DecodeOptions, LongInput
from aiayn.generate.search import decode
from aiayn.model.transformer import Transformer

DEFAULT_MAX_TOKENS = 6000
"""Source tokens per batch times beam size."""


def translate_texts(
    model: Transformer,
    tokenizer: TextTokenizer,
    sources: Sequence[str],
    options: DecodeOptions,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    use_cache: bool = True,
    progress: bool = False,
    compiled: CompiledStep | None = None,
) -> list[str]:
    """One translation per sentence, in input order; a blank sentence gives "".

    Sentences are sorted by length and decoded in batches of about `max_tokens` source tokens
    times beam size; a sentence longer than the positions is cut with a warning or refused, as
    `options.long_input` says; length limits past the positions are capped with a warning
    (`cap_lengths`). Each output is one line (line breaks become spaces). `compiled` runs the
    decoder steps compiled (`aiayn.generate.compiled`).

    Raises:
        ValueError: A sentence holds a lone surrogate (names its index), or is too long and
            `long_input` is `error`.
    """
    options = cap_lengths(options, model.config.max_len)
    ids = encode_sources(
        tokenizer, sources, max_len=model.config.max_len, policy=options.long_input
    )
    todo = [i for i, source_ids in enumerate(ids) if source_ids]
    outputs = [""] * len(sources)
    if not todo:
        return outputs
    lengths = [len(ids[i]) + 1 for i in todo]  # + EOS
    budget = max(max_tokens // options.beam, max(lengths))
    device = next(model.parameters()).device
    bar = tqdm(total=len(todo), unit="sent", disable=not progress)
    for batch_rows in TokenBatchSampler(lengths, budget, shuffle=False):
        rows = [todo[i] for i in batch_rows]
        batch = collate(  # the model's specials: Marian's EOS is 0, its padding the last id
            [(ids[row], []) for row in rows],
            pad_id=model.config.pad_id,
            bos_id=model.config.bos_id,
            eos_id=model.config.eos_id,
        ).to(device)
        decoded = decode(
            model, batch.src, batch.src_valid, options, use_cache=use_cache, compiled=compiled
        )
        for row, out in zip(rows, decoded, strict=True):
            outputs[row] = " ".join(tokenizer.decode(out).splitlines())  # one line per input
        bar.update(len(rows))
    bar.close()
    return outputs


def cap_lengths(options: DecodeOptions, positions: int) -> DecodeOptions:
    """`options` with `max_len_b` and `min_len` cut to the `positions` output tokens the
    decoder can hold (EOS included), with a warning naming each; outputs stop there anyway,
    and a warning says the limit asked for cannot be met."""
    changes = {}
    for name in ("max_len_b", "min_len"):
        value = getattr(options, name)
        if value > positions:
            warnings.warn(
                f"{name} {value} is more than the model's {positions} positions allow; "
                f"capped at {positions}",
                stacklevel=3,
            )
            changes[name] = positions
    return options.replace(**changes) if changes else options


def encode_sources(
    tokenizer: TextTokenizer, sources: Sequence[str], *, max_len: int, policy: LongInput
) -> list[list[int]]:
    """Token ids per sentence ([] for a blank one), fitted to `max_len` positions with EOS."""
    ids = tokenizer.encode_batch([s if s.strip() else "" for s in sources])
    return [
        fit_to_positions(source_ids, max_len - 1, policy, f"input {i + 1}", positions=max_len)
        for i, source_ids in enumerate(ids)
    ]


def fit_to_positions(
    ids: list[int],
    limit: int,
    policy: LongInput,
    what: str,
    *,
    positions: int,
    keep_end: bool = False,
) -> list[int]:
    """`ids` if they fit in `limit` tokens; else cut to their first (or, with `keep_end`, last)
    `limit` with a warning (`policy="truncate"`), or refused (`"error"`)."""
    if len(ids) <= limit:
        return ids
    message = (
        f"{what} has {len(ids)} tokens, more than the model's {positions} positions allow ({limit})"
    )
    if policy == "error":
        raise ValueError(f"{message}; shorten it or use long_input='truncate'")
    warnings.warn(f"{message}; kept its {'last' if keep_end else 'first'} {limit}", stacklevel=3)
    return ids[-limit:] if keep_end else ids[:limit]
