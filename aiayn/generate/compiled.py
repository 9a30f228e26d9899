"""The decoder step compiled ahead of decoding, for latency: one sentence at a time on a CPU.

A decoding step at batch 1 is ~60 small operations (three linear maps per attention, a
LayerNorm per sub-layer, ...) over a few hundred numbers each: in eager mode the time goes to
Python and dispatch between kernels, and to linear maps that read weights too big for the
cache at the speed of memory. `CompiledStep` hands `model.decode` (or a language model's
forward) for one new position per row to `torch.compile`:

- over a `StaticDecoderCache`, so every step has the same shapes: the step compiles four
  times, the first position (which also computes the cross-attention keys and values) and the
  later ones, each for one row and for any other number of rows; the source length is left
  symbolic, so a new sentence does not recompile it;
- with inductor's `freezing` (the weights become constants of the compiled code, repacked for
  its matrix kernels) and, on a CPU, `max_autotune` with its C++ GEMM template, which times its
  own kernels against ATen's for each linear map once and keeps the faster.

The encoder, and a language model's prompt, run eagerly, writing into the same cache.
Compiling takes tens of seconds (`docs/benchmarks.md`): worth it for a translator that serves
many sentences, not for one.
"""

from __future__ import annotations

import itertools
from types import FunctionType

import torch
import torch._inductor.config as inductor_config
from torch import Tensor

from aiayn.model.kv_cache import StaticDecoderCache
from aiayn.model.precision import inference_precision
from aiayn.model.transformer import LanguageModel, Transformer

Model = Transformer | LanguageModel


class CompiledStep:
    """`model`'s decoder step compiled over static caches, and the caches it runs on.

    The weights, and the model's structure and eval mode, are frozen into the compiled code
    (nothing re-checks them at each step): build a new `CompiledStep` after changing them.
    Searches take it as `compiled` (`decode`, `greedy_search`, `beam_search`).

    Args:
        model: An encoder-decoder or a decoder-only model in eval mode, fp32 or bf16 weights.
        capacity: Positions each static cache holds (prefix and output), at most the model's
            `max_len`; default 128 or `max_len` if smaller. Every step attends over the whole
            buffer (masked), yet at the Multi30k size, batch 1, a 24-position cache measured
            no faster than a 128-position one (2026-12-06, within run-to-run noise). A search
            whose rows could outgrow it runs on the eager cache instead.
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
        # The weights are constants of the compiled code: guards on the model's modules would
        # only re-check what freezing already fixed (173 -> 46 us a step at batch 1). Without
        # them another model of the same shapes would pass the guards, so each CompiledStep
        # compiles a function of its own, whose graphs dynamo keeps apart from all others.
        unguarded = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
        step = own_copy(decode_step if isinstance(model, Transformer) else forward_step)
        self._step = torch.compile(step, fullgraph=True, options=unguarded)

    def _compiled(self, *args: Tensor | StaticDecoderCache) -> Tensor:
        with inductor_config.patch(self._options):
            return self._step(self.model, *args)

    def new_cache(self, rows: int) -> StaticDecoderCache:
        config = self.model.config
        return StaticDecoderCache(
            len(self.model.decoder.layers), rows, config.n_heads, self.capacity,
            config.d_key, config.d_model // config.n_heads, dtype=self.dtype, device=self.device,
        )  # fmt: skip

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_valid: Tensor | None, cache: StaticDecoderCache
    ) -> Tensor:
        """`Transformer.decode` of one new position per row on `cache`, compiled: the first
        position (which computes the cross-attention keys and values) and the later ones are
        two graphs, each for one row and for more."""
        if tgt_in.size(1) != 1:
            return self.model.decode(tgt_in, memory, src_valid, cache=cache)
        tgt_in = fresh(tgt_in)
        if src_valid is None:  # one graph whether or not the batch has padding
            src_valid = memory.new_ones(memory.shape[:2], dtype=torch.bool)
        for layer in cache.cross_attn:  # a new source length must not recompile the step
            if layer.k is not None:
                mark_dynamic(layer.k, 2)
                mark_dynamic(layer.v, 2)
        mark_dynamic(memory, 1)
        mark_dynamic(src_valid, 1)
        if tgt_in.size(0) > 1:
            rows_dynamic(tgt_in, memory, src_valid, cache)
        return self._compiled(tgt_in, memory, src_valid, cache)

    def forward(self, tokens: Tensor, cache: StaticDecoderCache) -> Tensor:
        """`LanguageModel.forward` on `cache`: eager for a prompt, compiled for each token."""
        if tokens.size(1) != 1:
            return self.model(tokens, cache=cache)
        tokens = fresh(tokens)
        if tokens.size(0) > 1:
            rows_dynamic(tokens, None, None, cache)
        return self._compiled(tokens, cache)


def decode_step(
    model: Transformer,
    tgt_in: Tensor,
    memory: Tensor,
    src_valid: Tensor,
    cache: StaticDecoderCache,
) -> Tensor:
    return model.decode(tgt_in, memory, src_valid, cache=cache)


def forward_step(model: LanguageModel, tokens: Tensor, cache: StaticDecoderCache) -> Tensor:
    return model(tokens, cache=cache)


_copies = itertools.count()


def own_copy(function: FunctionType) -> FunctionType:
    """`function` with a code object of its own: dynamo keeps compiled graphs, and counts
    recompiles against its limit, per code object."""
    code = function.__code__.replace(co_name=f"{function.__name__}_{next(_copies)}")
    return FunctionType(code, function.__globals__, code.co_name, function.__defaults__)


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
