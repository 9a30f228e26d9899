"""Search for the most likely output: greedy decoding on the key/value cache."""

from __future__ import annotations

import torch
from torch import Tensor

from aiayn.model.transformer import Transformer


@torch.no_grad()
def greedy_search(
    model: Transformer,
    src: Tensor,
    src_valid: Tensor | None = None,
    *,
    max_len: int,
    use_cache: bool = True,
) -> Tensor:
    """Pick the most likely token at each step until every row has produced EOS.

    Args:
        model: an encoder-decoder (put it in eval mode first).
        src: (batch, src_len) source ids; src_valid defaults to src != pad.
        max_len: most output tokens per row, EOS included.
        use_cache: decode incrementally on the key/value cache; False recomputes the whole
            prefix each step (the reference the cache is tested against).

    Returns:
        (batch, out_len) ids without BOS, each row ending with EOS unless cut at max_len,
        padded with pad after EOS.
    """
    config = model.config
    src_valid = src != config.pad_id if src_valid is None else src_valid
    memory = model.encode(src, src_valid)
    batch = src.size(0)
    tokens = torch.full((batch, 1), config.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    for _ in range(max_len):
        step_in = tokens[:, -1:] if use_cache else tokens
        logits = model.decode(step_in, memory, src_valid, cache=cache)[:, -1]  # (batch, vocab)
        next_token = logits.argmax(dim=-1).masked_fill(finished, config.pad_id)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == config.eos_id
        if finished.all():
            break
    return tokens[:, 1:]
