"""ONNX export of an encoder-decoder, for onnxruntime and whatever else reads ONNX, and a greedy
decoder that runs it (the proof that the export decodes as we do).

Two graphs, with the decoder's key/value cache as explicit inputs and outputs:

    encoder.onnx       src (batch, src_len) int64, src_valid (batch, src_len) bool
                       -> memory (batch, src_len, d_model),
                          cross_k_0, cross_v_0, ... (batch, heads, src_len, d_head) per layer
    decoder_step.onnx  tokens (batch, 1) int64, src_valid (batch, src_len) bool,
                       self_k_0, self_v_0, ... (batch, heads, past, d_head) per layer,
                       cross_k_0, cross_v_0, ... as the encoder gave them
                       -> logits (batch, vocab) float32 for the next token,
                          present_k_0, present_v_0, ... (batch, heads, past + 1, d_head)

Decoding starts with BOS and empty caches (past = 0) and feeds each step's `present_*` back as
the next step's `self_*`. `onnx.json` beside the graphs names the inputs and outputs and the
special ids; the tokenizer files are copied too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from aiayn.data.tokenizer import TextTokenizer
from aiayn.files import atomic_write
from aiayn.model.transformer import Transformer

LAYOUT_FILE = "onnx.json"


class ConcatCache:
    """A KVCache for export: keys and values held as plain tensors, appended by concatenation
    (no preallocated storage, which traced graphs cannot grow)."""

    def __init__(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v = k, v

    @property
    def length(self) -> int:
        """Positions held: a symbolic size while exporting (`len()` would fix it to a number)."""
        return self.k.size(2)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def set(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v = k, v


class _Caches:
    """What `Transformer.decode` reads of a DecoderCache, over ConcatCaches."""

    def __init__(self, self_attn: list[ConcatCache], cross_attn: list[ConcatCache]) -> None:
        self.self_attn, self.cross_attn = self_attn, cross_attn

    @property
    def length(self) -> int:
        return self.self_attn[0].length


class EncoderGraph(nn.Module):
    """Source -> memory and every decoder layer's cross-attention keys and values."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_valid: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(src, src_valid)
        out = [memory]
        for layer in self.model.decoder.layers:
            attn = layer.cross_attn
            out += [attn.split_heads(attn.k_proj(memory)), attn.split_heads(attn.v_proj(memory))]
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """One decoding step on explicit caches (see the module doc for the layout)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model, self.n_layers = model, len(model.decoder.layers)

    def forward(self, tokens: Tensor, src_valid: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        n = self.n_layers
        self_kv, cross_kv = caches[: 2 * n], caches[2 * n :]
        self_caches = [ConcatCache(self_kv[2 * i], self_kv[2 * i + 1]) for i in range(n)]
        cross = [ConcatCache(cross_kv[2 * i], cross_kv[2 * i + 1]) for i in range(n)]
        memory = cross_kv[0]  # unused once the cross caches are set; only its batch matters
        logits = self.model.decode(
            tokens,
            memory,
            src_valid,
            cache=_Caches(self_caches, cross),  # type: ignore[arg-type]
        )
        present = [t for c in self_caches for t in (c.k, c.v)]
        return (logits[:, -1], *present)


def names(n_layers: int) -> dict[str, list[str]]:
    """Input and output names of both graphs."""
    cross = [f"cross_{kv}_{i}" for i in range(n_layers) for kv in "kv"]
    return {
        "encoder_inputs": ["src", "src_valid"],
        "encoder_outputs": ["memory", *cross],
        "step_inputs": [
            "tokens",
            "src_valid",
            *[f"self_{kv}_{i}" for i in range(n_layers) for kv in "kv"],
            *cross,
        ],  # fmt: skip
        "step_outputs": ["logits", *[f"present_{kv}_{i}" for i in range(n_layers) for kv in "kv"]],
    }


def export_onnx(model: Transformer, tokenizer: TextTokenizer, out_dir: str | Path) -> Path:
    """Write `encoder.onnx`, `decoder_step.onnx`, `onnx.json` and the tokenizer to `out_dir`
    with torch's exporter (batch, source length and cache length dynamic).

    Raises:
        ValueError: Not an encoder-decoder, rotary positions (not exported yet), or a d_k
            other than d_model / n_heads.
        ImportError: onnx / onnxscript are not installed (`pip install "aiayn[onnx]"`).
    """
    config = model.config
    if config.kind != "encoder-decoder":
        raise ValueError("onnx export covers encoder-decoders (translation models) for now")
    if config.positions == "rope":
        raise ValueError("onnx export of rotary positions (model.positions rope) is not done yet")
    if config.d_key != config.d_head:
        raise ValueError(f"onnx export needs d_k = d_model / n_heads, got model.d_k={config.d_k}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    n, heads, d_head = len(model.decoder.layers), config.n_heads, config.d_head
    io = names(n)
    batch, src_len, past = (
        torch.export.Dim("batch"),
        torch.export.Dim("src_len", max=config.max_len),
        torch.export.Dim("past", max=config.max_len),
    )
    src = torch.full((2, 5), config.unk_id, dtype=torch.long)
    src_valid = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        encoded = EncoderGraph(model)(src, src_valid)
    _export(
        EncoderGraph(model), (src, src_valid), out_dir / "encoder.onnx", io["encoder_inputs"],
        io["encoder_outputs"], ({0: batch, 1: src_len}, {0: batch, 1: src_len}),
    )  # fmt: skip
    kv = torch.zeros(2, heads, 3, d_head)
    step_args = (
        torch.full((2, 1), config.bos_id, dtype=torch.long), src_valid,
        *[kv.clone() for _ in range(2 * n)], *encoded[1:],
    )  # fmt: skip
    caches = tuple([{0: batch, 2: past}] * (2 * n) + [{0: batch, 2: src_len}] * (2 * n))
    shapes = ({0: batch}, {0: batch, 1: src_len}, caches)  # the forward's (tokens, src_valid, *)
    _export(DecoderStepGraph(model), step_args, out_dir / "decoder_step.onnx",
            io["step_inputs"], io["step_outputs"], shapes)  # fmt: skip
    layout = {
        **io,
        "n_layers": n, "n_heads": heads, "d_head": d_head, "max_len": config.max_len,
        "pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id,
    }  # fmt: skip
    atomic_write(out_dir / LAYOUT_FILE, json.dumps(layout, indent=1) + "\n")
    tokenizer.save_to(out_dir)
    return out_dir


def _export(module: nn.Module, args: tuple, file: Path, inputs: list[str], outputs: list[str],
            shapes: tuple) -> None:  # fmt: skip
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as error:
        raise ImportError(
            f"onnx export needs onnx and onnxscript: pip install 'aiayn[onnx]' ({error})"
        ) from None
    with torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=inputs, output_names=outputs,
            dynamic_shapes=shapes, external_data=False,
        )  # fmt: skip
    atomic_write(file, program.model_proto.SerializeToString())


class OnnxGreedy:
    """Greedy decoding with onnxruntime on what `export_onnx` wrote: BOS first, the cache fed
    back each step, padding and BOS never chosen, stop at EOS or `max_len_a * source length +
    max_len_b` tokens; returns the ids before EOS (as `aiayn.generate.search.decode`)."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime

        folder = Path(folder)
        self.layout = json.loads((folder / LAYOUT_FILE).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), options)
        self.step = onnxruntime.InferenceSession(str(folder / "decoder_step.onnx"), options)

    def decode(self, src: Tensor, src_valid: Tensor, *, max_len_a: float = 1.5,
               max_len_b: int = 10) -> list[list[int]]:  # fmt: skip
        import numpy as np

        lay = self.layout
        src_np, valid_np = src.numpy().astype(np.int64), src_valid.numpy().astype(bool)
        encoded = self.encoder.run(None, {"src": src_np, "src_valid": valid_np})
        cross = dict(zip(lay["encoder_outputs"][1:], encoded[1:], strict=True))
        rows = src_np.shape[0]
        lengths = valid_np.sum(1)
        limits = np.minimum(np.floor(max_len_a * lengths + max_len_b).astype(int), lay["max_len"])
        limits = np.maximum(limits, 1)
        empty = np.zeros((rows, lay["n_heads"], 0, lay["d_head"]), dtype=np.float32)
        cache = {name: empty for name in lay["step_inputs"][2 : 2 + 2 * lay["n_layers"]]}
        tokens = np.full((rows, 1), lay["bos_id"], dtype=np.int64)
        out: list[list[int]] = [[] for _ in range(rows)]
        done = np.zeros(rows, dtype=bool)
        for step in range(int(limits.max())):
            logits, *present = self.step.run(
                None, {"tokens": tokens, "src_valid": valid_np, **cache, **cross}
            )
            logits[:, [lay["pad_id"], lay["bos_id"]]] = -np.inf
            chosen = logits.argmax(-1)
            for row in range(rows):
                if not done[row]:
                    done[row] = chosen[row] == lay["eos_id"] or step + 1 >= limits[row]
                    if chosen[row] != lay["eos_id"]:
                        out[row].append(int(chosen[row]))
            if done.all():
                break
            cache = dict(zip(cache, present, strict=True))
            tokens = chosen.reshape(rows, 1).astype(np.int64)
        return out
