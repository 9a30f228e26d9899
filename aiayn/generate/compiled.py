"""The decoder step compiled ahead of decoding, for latency: one sentence at a time on a CPU.

A decoding step at batch 1 is ~60 small operations (three linear maps per attention, a
LayerNorm per sub-layer, ...) over a few hundred numbers each: in eager mode the time goes to
Python and dispatch between kernels, and to linear maps that read weights too big for the
cache at the speed of memory. `CompiledStep` hands `model.decode` (or a language model's
forward) for one new position per row to `torch.compile`:

- over a `StaticDecoderCache`, so every step has the same shapes and the step compiles once;
  the source length is left symbolic, so a new sentence does not recompile it;
- with inductor's `freezing` (the weights become constants of the compiled code, repacked for
  its matrix kernels) and, on a CPU, `max_autotune` with its C++ GEMM template, which times its
  own kernels against ATen's for each linear map once and keeps the faster.

The first step of a sentence (the source's cross-attention keys and values, or a whole prompt)
runs eagerly on the same cache; every later step runs compiled. Compiling takes tens of seconds
(`docs/benchmarks.md`): worth it for a translator that serves many sentences, not for one.
"""

from __future__ import annotations

import torch
import torch._inductor.config as inductor_config
from torch import Tensor

from aiayn.model.kv_cache import StaticDecoderCache
from aiayn.model.precision import inference_precision
from aiayn.model.transformer import LanguageModel, Transformer

Model = Transformer | LanguageModel


class CompiledStep:
    """`model`'s decoder step compiled over static caches, and the caches it runs on.

    The weights are frozen into the compiled code: build a new `CompiledStep` after changing
    them. Decoding uses it through `decode(..., step=CompiledStep(model))` (greedy or beam).

    Args:
        model: An encoder-decoder or a decoder-only model in eval mode, fp32 or bf16 weights.
        capacity: Positions each static cache holds (prefix and output), at most the model's
            `max_len`; default 128 or `max_len` if smaller. Every step attends over the whole
            buffer, so a smaller one runs faster (Multi30k size, batch 1: 64 positions 23.5 ms a
            sentence of 20 tokens, 128 26.5, 256 30); a search whose rows could outgrow it
            runs on the eager cache instead.
        autotune: On a CPU, let inductor time its C++ GEMM kernels against ATen's for each
            linear map (slower to compile, faster to run).
    """

    def __init__(self, model: Model, *, capacity: int | None = None, autotune: bool = True) -> None:
        if model.training:
            raise ValueError("compile a model in eval mode (model.eval()): dropout is frozen in")
        precision = inference_precision(model)
        if precision not in ("fp32", "bf16"):
            raise ValueError(
                f"compiling the decoder step needs fp32 or bf16 weights, not {precision}"
            )
        self.model = model
        self.capacity = capacity or min(128, model.config.max_len)
        if self.capacity > model.config.max_len:
            raise ValueError(
                f"capacity {self.capacity} exceeds the model's max_len ({model.config.max_len})"
            )
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        options: dict[str, object] = {"freezing": True}
        if autotune and self.device.type == "cpu":
            options |= {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
        # Inductor decides whether to freeze from its global config when it compiles, which
        # `torch.compile(options=...)` does not reach (torch 2.13): the options are patched
        # in around each call instead, so that a compile or recompile sees them and nothing
        # else in the process does.
        self._options = options
        forward = model.decode if isinstance(model, Transformer) else model.forward
        self._step = torch.compile(forward, fullgraph=True)

    def _compiled(self, *args: object, **kwargs: object) -> Tensor:
        with inductor_config.patch(self._options):
            return self._step(*args, **kwargs)

    def new_cache(self, rows: int) -> StaticDecoderCache:
        config = self.model.config
        return StaticDecoderCache(
            len(self.model.decoder.layers), rows, config.n_heads, self.capacity,
            config.d_key, config.d_model // config.n_heads, dtype=self.dtype, device=self.device,
        )  # fmt: skip

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_valid: Tensor | None, cache: StaticDecoderCache
    ) -> Tensor:
        """`Transformer.decode` on `cache`: eager for the first position (which sets the
        cross-attention keys and values), compiled for each one after it."""
        if tgt_in.size(1) != 1 or cache.cross_attn[0].k is None:
            return self.model.decode(tgt_in, memory, src_valid, cache=cache)
        tgt_in = fresh(tgt_in)
        if src_valid is None:  # one graph whether or not the batch has padding
            src_valid = memory.new_ones(memory.shape[:2], dtype=torch.bool)
        for layer in cache.cross_attn:  # a new source length must not recompile the step
            mark_dynamic(layer.k, 2)
            mark_dynamic(layer.v, 2)
        mark_dynamic(memory, 1)
        mark_dynamic(src_valid, 1)
        if tgt_in.size(0) > 1:
            rows_dynamic(tgt_in, memory, src_valid, cache)
        return self._compiled(tgt_in, memory, src_valid, cache=cache)

    def forward(self, tokens: Tensor, cache: StaticDecoderCache) -> Tensor:
        """`LanguageModel.forward` on `cache`: eager for a prompt, compiled for each token."""
        if tokens.size(1) != 1:
            return self.model(tokens, cache=cache)
        tokens = fresh(tokens)
        if tokens.size(0) > 1:
            rows_dynamic(tokens, None, None, cache)
        return self._compiled(tokens, cache=cache)


def mark_dynamic(tensor: Tensor, dim: int) -> None:
    """Compile `tensor`'s size `dim` as a symbol where it can be (sizes 0 and 1 stay numbers)."""
    torch._dynamo.maybe_mark_dynamic(tensor, dim)


def rows_dynamic(
    tokens: Tensor, memory: Tensor | None, src_valid: Tensor | None, cache: StaticDecoderCache
) -> None:
    """The number of rows as a symbol: one compiled step serves every batch of two or more rows
    (batches end with fewer rows, finished rows leave, beam search has k per sentence); one
    row compiles a step of its own."""
    for tensor in (tokens, memory, src_valid):
        if tensor is not None:
            mark_dynamic(tensor, 0)
    for layer in (*cache.self_attn, *cache.cross_attn):
        for tensor in (layer.k, layer.v):
            if tensor is not None:  # a language model's cross-attention caches stay empty
                mark_dynamic(tensor, 0)


def fresh(tokens: Tensor) -> Tensor:
    """A copy of the (rows, 1) new tokens with the strides of a new tensor: the decoders slice
    them from a growing (rows, length) tensor, whose row stride would recompile every step."""
    return tokens.new_empty(tokens.shape).copy_(tokens)
