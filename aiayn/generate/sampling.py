"""Sampling on the key/value cache: temperature, top-k (Fan et al. 2018) and top-p, "nucleus"
(Holtzman et al. 2020), seeded, for the encoder-decoder and the decoder-only model; and
`generate`, the language model's continuation of a prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aiayn.generate.decoding import DecoderState, Model, decode_token_by_token, pad_outputs
from aiayn.generate.options import DecodeOptions, check_sampling
from aiayn.model.transformer import LanguageModel


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set to -inf every token outside the `top_k` most likely (0: no limit) and outside the
    smallest set of most likely tokens whose probability reaches `top_p` (1.0: no limit).
    The most likely token always stays.

    Shape:
        logits: (rows, vocab) -> (rows, vocab)
    """
    check_sampling(top_k=top_k, top_p=top_p)
    if 0 < top_k < logits.size(-1):
        kept = logits.topk(top_k, dim=-1).indices
        logits = torch.full_like(logits, float("-inf")).scatter(-1, kept, logits.gather(-1, kept))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter(-1, order, sorted_logits)
    return logits


def sample_tokens(
    log_probs: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row from softmax(log_probs / temperature), filtered by
    `filter_logits`; temperature 0 takes the most likely token.

    Shape:
        log_probs: (rows, vocab) -> (rows,)
    """
    check_sampling(temperature=temperature)
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    logits = filter_logits(log_probs / temperature, top_k=top_k, top_p=top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample(
    model: Model,
    src: Tensor,
    src_valid: Tensor | None = None,
    options: DecodeOptions | None = None,
    *,
    use_cache: bool = True,
    on_step: Callable[[Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Sample each row's output token by token until EOS or its maximum length.

    Args:
        model: An encoder-decoder, or a decoder-only model (`src` is then the prompt).
        src: (batch, src_len) ids; src_valid defaults to src != pad.
        options: `temperature`, `top_k`, `top_p` (see `sample_tokens` and `filter_logits`);
            `seed` of the draws (a `torch.Generator` on the model's device: the same seed,
            inputs and batch give the same outputs; None draws from torch's global generator);
            `max_len_a`, `max_len_b`, each row's most output tokens, EOS included,
            floor(max_len_a * source length + max_len_b) (an encoder-decoder: fewer if its
            positions end sooner); `min_len`, no EOS before this many output tokens.
        use_cache: Decode incrementally on the key/value cache.
        on_step: Sees each step's tokens as they are drawn (see `decode_token_by_token`).

    Returns:
        (batch, out_len) ids, each row ending with EOS unless cut at its maximum length,
        padded after it.
    """
    options = options or DecodeOptions()
    generator = None
    if options.seed is not None:
        generator = torch.Generator(device=src.device).manual_seed(options.seed)

    def choose(log_probs: Tensor) -> Tensor:
        return sample_tokens(
            log_probs,
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
            generator=generator,
        )

    state = DecoderState(model, src, src_valid, use_cache=use_cache)
    max_lens = state.max_output_lengths(options.max_len_a, options.max_len_b)
    outputs = decode_token_by_token(
        state, choose, max_lens=max_lens, min_len=options.min_len, on_step=on_step
    )
    return pad_outputs(outputs, model.config.pad_id, src.device)


def generate(
    model: LanguageModel,
    prompt: Tensor,
    options: DecodeOptions | None = None,
    *,
    use_cache: bool = True,
    on_step: Callable[[Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Continue a prompt with a decoder-only model, sampling (temperature 0: greedy).

    Stops at EOS or after `options.max_new_tokens`; past the model's positions it conditions
    on the last `max_len` tokens (a sliding window), so of a prompt longer than the positions
    only the last `max_len` tokens count. `temperature`, `top_k`, `top_p` and `seed` as in
    `sample`; `on_step` sees each new token as it is drawn (for streaming).

    Args:
        model: A `LanguageModel` in eval mode.
        prompt: (prompt_len,) or (batch, prompt_len) ids, rows of equal length; an empty
            prompt starts from BOS.

    Returns:
        The new ids, (out_len,) or (batch, out_len) like `prompt`, padded after EOS.
    """
    if model.config.kind != "decoder-only":
        raise ValueError("generate continues a prompt with a decoder-only model; use sample")
    options = options or DecodeOptions()
    length = options.replace(max_len_a=0.0, max_len_b=options.max_new_tokens)
    rows = prompt[None] if prompt.dim() == 1 else prompt
    out = sample(model, rows, options=length, use_cache=use_cache, on_step=on_step)
    return out[0] if prompt.dim() == 1 else out
