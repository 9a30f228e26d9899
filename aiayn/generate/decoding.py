"""The model's side of decoding, shared by every search: rows of prefixes, the source encoded
once, the key/value cache (the causal mask of §3.2.3 makes decoding incremental), the next-token
log-probabilities, and the token-by-token loop of greedy decoding and sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from aiayn.generate.compiled import CompiledStep
from aiayn.model.attention import keeping_weights
from aiayn.model.kv_cache import DecoderCache, StaticDecoderCache
from aiayn.model.transformer import LanguageModel, Transformer

Model = Transformer | LanguageModel


class DecoderState:
    """Rows of prefixes being extended, with what the model needs to score their next token.

    An encoder-decoder encodes `src` once and every row starts with BOS. A decoder-only model
    reads `src` as the prompt (every row the same length, no padding; an empty prompt starts
    from BOS) and every row starts with it. With `use_cache`, each call feeds only the positions
    the cache has not seen, and cross-attention computes the memory's keys and values on the
    first call only; without it the whole prefix is recomputed every step (the reference the
    cache is tested against). A decoder-only model keeps going past its `max_len` positions on
    a sliding window: each later step recomputes the last `max_len` tokens without the cache
    (whose positions would have shifted), as nanoGPT samples.

    Args:
        model: A `Transformer` or `LanguageModel`, in eval mode.
        src: (batch, src_len) source ids, or (batch, prompt_len) prompt ids.
        src_valid: (batch, src_len) bool, True on real tokens; defaults to src != pad.
        use_cache: Decode incrementally on a `DecoderCache` (or, after `run_compiled`, on a
            compiled step's static cache).
        read_cross_attention: After each call, keep the last decoder layer's cross-attention
            of the newest position, averaged over heads, in `cross_attention` (rows, src_len);
            run inside `keeping_cross_attention(model)`.
    """

    def __init__(
        self,
        model: Model,
        src: Tensor,
        src_valid: Tensor | None = None,
        *,
        use_cache: bool = True,
        read_cross_attention: bool = False,
    ) -> None:
        config = model.config
        self.model = model
        self.cache: DecoderCache | StaticDecoderCache | None = (
            model.new_cache() if use_cache else None
        )
        self.cached = 0  # positions the cache holds
        self.compiled: CompiledStep | None = None
        self.encoder_decoder = config.kind == "encoder-decoder"
        self.read_cross_attention = read_cross_attention
        self.cross_attention: Tensor | None = None
        if self.encoder_decoder:
            self.src_valid: Tensor | None = src != config.pad_id if src_valid is None else src_valid
            self.memory: Tensor | None = model.encode(src, self.src_valid)
            # No source padding (one sentence, or equal lengths): decode without a memory mask.
            self.memory_padded = not bool(self.src_valid.all())
            self.prefix = src.new_full((src.size(0), 1), config.bos_id)
            self.source_lengths = self.src_valid.sum(dim=1)
        else:
            if read_cross_attention:
                raise ValueError("a decoder-only model has no cross-attention to read")
            if src_valid is not None and not bool(src_valid.all()):
                raise ValueError("prompts in one batch must have the same length (no padding)")
            self.src_valid = self.memory = None
            empty = src.size(1) == 0
            self.prefix = src.new_full((src.size(0), 1), config.bos_id) if empty else src
            self.source_lengths = src.new_full((src.size(0),), src.size(1))

    def max_output_lengths(self, a: float, b: int) -> Tensor:
        """Per row, floor(a * source length + b) output tokens, at least 1; an encoder-decoder
        also at most what its decoder's positions allow after BOS. Shape: (rows,)."""
        wanted = (a * self.source_lengths.double() + b).floor().long()
        if not self.encoder_decoder:  # slides its window past the positions
            return wanted.clamp(min=1)
        positions_left = self.model.config.max_len - self.prefix.size(1) + 1
        return wanted.clamp(min=1, max=max(1, positions_left))

    def run_compiled(self, compiled: CompiledStep, max_lens: Tensor) -> bool:
        """Run the steps on `compiled`'s static cache from now on, if the longest row fits its
        capacity (prefix and output) and no cross-attention is read; otherwise stay on the
        eager cache (the same tokens, slower). Call before the first step. Returns whether the
        steps run compiled.

        Args:
            compiled: Built for this state's model.
            max_lens: (rows,) most output tokens per row, from `max_output_lengths`.
        """
        if compiled.model is not self.model:
            raise ValueError("the compiled step was built for another model")
        if self.cache is None or self.cached:
            raise ValueError("a compiled step needs the cache, from the first step on")
        positions = self.prefix.size(1) + int(max_lens.max()) - 1  # the last token is not fed
        if self.read_cross_attention or positions > compiled.capacity:
            return False
        self.compiled, self.cache = compiled, compiled.new_cache(self.prefix.size(0))
        return True

    def next_logits(self, tokens: Tensor) -> Tensor:
        """Logits (rows, vocab_size), float32, for the token after each row of `tokens`.

        Args:
            tokens: (rows, len) every token of each row so far, the prefix included.
        """
        window = self.model.config.max_len
        if not self.encoder_decoder and tokens.size(1) > window:
            self.cache = None  # absolute positions shift from now on: recompute the window
            return self.model(tokens[:, -window:])[:, -1].float()
        new = tokens if self.cache is None else tokens[:, self.cached :]
        self.cached = tokens.size(1)
        compiled = self.compiled
        if self.encoder_decoder:
            src_valid = self.src_valid if self.memory_padded else None
            if compiled is not None and isinstance(self.cache, StaticDecoderCache):
                logits = compiled.decode(new, self.memory, src_valid, self.cache)
            else:
                logits = self.model.decode(new, self.memory, src_valid, cache=self.cache)
        elif compiled is not None and isinstance(self.cache, StaticDecoderCache):
            logits = compiled.forward(new, self.cache)
        else:
            logits = self.model(new, cache=self.cache)
        if self.read_cross_attention:
            weights = self.model.decoder.layers[-1].cross_attn.weights  # (rows, heads, q, src)
            self.cross_attention = weights[:, :, -1].mean(dim=1).float()
        return logits[:, -1].float()

    def select(self, index: Tensor, *, same_source: bool = False) -> None:
        """Keep rows `index`, in that order (repeats allowed: beam search copies rows).

        `same_source` promises that every row stays within a group of rows that share one
        source sentence (so equal memory): the cross-attention cache and memory are kept.
        """
        if isinstance(self.cache, StaticDecoderCache):
            if same_source:
                self.cache.reorder_self(index, self.cached)
            else:
                self.cache.reorder(index, self.cached)
        elif self.cache is not None:
            if same_source:
                self.cache.reorder_self(index)
            else:
                self.cache.reorder(index)
        if self.memory is not None and not same_source:
            self.memory = self.memory.index_select(0, index)
            self.src_valid = self.src_valid.index_select(0, index)


@contextmanager
def keeping_cross_attention(model: Model) -> Iterator[None]:
    """Make the last decoder layer keep its cross-attention weights while inside."""
    layer = model.decoder.layers[-1].cross_attn
    if layer is None:
        raise ValueError("a decoder-only model has no cross-attention")
    with keeping_weights([layer]):
        yield


def next_log_probs(logits: Tensor, step: int, *, min_len: int, model: Model) -> Tensor:
    """log softmax of `logits` (rows, vocab), with pad and BOS never produced and EOS not before
    `min_len` output tokens (`step` tokens have been produced so far)."""
    config = model.config
    log_probs = logits.log_softmax(dim=-1)
    log_probs[:, [config.pad_id, config.bos_id]] = float("-inf")
    if step < min_len:
        log_probs[:, config.eos_id] = float("-inf")
    return log_probs


def decode_token_by_token(
    state: DecoderState,
    choose: Callable[[Tensor], Tensor],
    *,
    max_lens: Tensor,
    min_len: int = 0,
    on_step: Callable[[Tensor, Tensor], None] | None = None,
) -> list[list[int]]:
    """Extend every row by `choose(log_probs)` until it produces EOS or reaches its maximum
    length; finished rows leave the batch, so later steps compute only unfinished rows.

    Args:
        state: The rows to extend.
        choose: (rows, vocab) log-probabilities -> (rows,) next token ids.
        max_lens: (rows,) most output tokens per row, EOS included.
        min_len: No EOS before this many output tokens.
        on_step: Called after each step with the original index of each row still decoding
            and the token it just took, both (rows,): for streaming. An exception raised
            in it stops decoding and propagates.

    Returns:
        Per row, the output ids (the prefix left out), ending with EOS unless cut at max_len.
    """
    model, eos_id = state.model, state.model.config.eos_id
    tokens, start = state.prefix, state.prefix.size(1)
    rows = torch.arange(tokens.size(0), device=tokens.device)  # original row of each row
    outputs: list[list[int]] = [[] for _ in range(tokens.size(0))]
    for step in range(int(max_lens.max())):
        logits = state.next_logits(tokens)
        log_probs = next_log_probs(logits, step, min_len=min_len, model=model)
        chosen = choose(log_probs)
        if on_step is not None:
            on_step(rows, chosen)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        done = (tokens[:, -1] == eos_id) | (max_lens[rows] <= step + 1)
        if bool(done.any()):
            for row, out in zip(rows[done].tolist(), tokens[done, start:].tolist(), strict=True):
                outputs[row] = out
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            state.select(keep)
            tokens, rows = tokens[keep], rows[keep]
    return outputs


def pad_outputs(outputs: list[list[int]], pad_id: int, device: torch.device) -> Tensor:
    """Per-row ids -> (rows, longest) right-padded with pad."""
    width = max((len(out) for out in outputs), default=0)
    padded = torch.full((len(outputs), width), pad_id, dtype=torch.long)
    for row, out in enumerate(outputs):
        padded[row, : len(out)] = torch.tensor(out, dtype=torch.long)
    return padded.to(device)
