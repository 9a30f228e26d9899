"""Inference precision: the numbers a trained model decodes with. A departure from the paper,
which is about training; here only decoding changes.

- `fp32`: the weights as trained (the reference every other precision is measured against).
- `bf16`: weights and activations in bfloat16 (fast where the CPU multiplies bf16 natively,
  AVX512-BF16 or AMX, and on GPUs; emulated and slow elsewhere).
- `int8`: every linear map's weight stored as int8 with one scale per output channel
  (symmetric), and its input quantized to 8 bits on the fly, per batch (dynamic quantization:
  `torch.ao`'s quantized dynamic Linear, fbgemm/x86 kernels, CPU only). Embeddings, LayerNorms
  and attention's own products stay fp32. The tied output projection gets its own int8 copy of
  the embedding table.

`int8_tensors` / `load_int8_tensors` turn an int8 model into plain tensors (int8 weights, fp32
scales) and back, so that quantized weights are stored as safetensors like any other.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from aiayn.machine import cpu_has_native_bf16

InferencePrecision = Literal["fp32", "bf16", "int8"]
INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
INT8_FORMAT = "aiayn-int8-dynamic-per-channel"
"""The safetensors metadata `format` of a file `int8_tensors` made."""


def check_precision(precision: str) -> None:
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; choose from {', '.join(INFERENCE_PRECISIONS)}"
        )


def to_inference_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` (fp32, eval mode) in `precision`, converted in place; returns it.

    Raises:
        ValueError: An unknown precision, int8 on a non-CPU device, or a model that is not fp32.
    """
    check_precision(precision)
    current = inference_precision(model)
    if current != "fp32":
        raise ValueError(f"the model is already {current}; load it in fp32 to convert it")
    if precision == "bf16":
        device = next(model.parameters()).device
        if device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 decoding is emulated "
                "and much slower than fp32; --quantize int8 is the fast choice here",
                stacklevel=2,
            )
        return model.to(torch.bfloat16)
    if precision == "int8":
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"int8 decoding runs on the CPU only, not {device}; use bf16 there")
        torch.backends.quantized.engine = _int8_engine()
        try:  # deprecated in torch in favour of torchao: imported here, so that its removal
            # costs int8 alone, not `import aiayn`
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as e:
            lacks = f"int8 needs torch.ao, which torch {torch.__version__} lacks: {e}"
            raise ValueError(lacks) from None
        with _quiet_deprecation():
            return quantize_dynamic(
                model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
            )
    return model


def inference_precision(model: nn.Module) -> str:
    """`int8` if any linear map is dynamically quantized, else the floating dtype's name."""
    if any(_is_int8_linear(module) for module in model.modules()):
        return "int8"
    dtype = next(model.parameters()).dtype
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def int8_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Every tensor of an int8 model as plain tensors: per quantized linear map `NAME`,
    `NAME.weight_int8` (out, in) int8, `NAME.weight_scale` (out,) fp32 and `NAME.bias`; the
    other parameters and buffers as in `state_dict()`."""
    tensors: dict[str, Tensor] = {}
    packed: set[str] = set()
    for name, module in model.named_modules():
        if _is_int8_linear(module):
            weight, bias = module._weight_bias()
            per_channel = (torch.per_channel_symmetric, torch.per_channel_affine)
            if weight.qscheme() not in per_channel or bool(
                weight.q_per_channel_zero_points().any()
            ):
                raise ValueError(f"{name}: expected symmetric per-channel int8 weights")
            tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
            tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().float().contiguous()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
            packed.add(f"{name}.")  # its own state (packed weights, scale) is replaced above
    aliases = _aliases(model)
    for key, value in model.state_dict().items():
        if key in aliases or any(key.startswith(prefix) for prefix in packed):
            continue
        if isinstance(value, Tensor):
            tensors[key] = value.detach().contiguous()
    return tensors


def load_int8_tensors(model: nn.Module, tensors: dict[str, Tensor], *, source: str) -> None:
    """Load what `int8_tensors` made into `model`, already converted to int8 (same config).

    Raises:
        ValueError: Tensors missing, extra or of another shape (named, with `source`).
    """
    expected = int8_tensors(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"{source} does not fit the model: missing {missing}, extra {extra}, "
            f"other shape {wrong}"
        )
    for name, module in model.named_modules():
        if _is_int8_linear(module):
            scale = tensors[f"{name}.weight_scale"].double()
            q = tensors[f"{name}.weight_int8"]
            zero = torch.zeros_like(scale, dtype=torch.long)
            with _quiet_deprecation():
                weight = torch._make_per_channel_quantized_tensor(q, scale, zero, 0)
                module.set_weight_bias(weight, tensors.get(f"{name}.bias"))
    packed = {f"{name}." for name, m in model.named_modules() if _is_int8_linear(m)}
    targets = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in tensors.items():
            if not any(key.startswith(prefix) for prefix in packed):
                targets[key].copy_(value)


@contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """torch.ao's eager quantization and quantized tensors warn that they are deprecated in
    favour of torchao, whose CPU int8 kernels are slower than fp32 here (docs/benchmarks.md):
    a user should not see that warning on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        yield


def _is_int8_linear(module: nn.Module) -> bool:
    """A linear map that `to_inference_precision(..., "int8")` made (torch.ao's dynamic Linear)."""
    kind = type(module)
    return kind.__name__ == "Linear" and kind.__module__.startswith("torch.ao.nn.quantized.dynamic")


def _int8_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        if engine in engines:
            return engine
    raise RuntimeError(f"this torch build has no int8 engine (it has {engines})")


def _aliases(model: nn.Module) -> set[str]:
    """Keys of `model.state_dict()` whose tensor is an earlier key's (tied weights: the shared
    source and target embedding); loading the first fills them too."""
    seen: set[int] = set()
    aliases = set()
    for key, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor):
            continue
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen:
            aliases.add(key)
        seen.add(pointer)
    return aliases
