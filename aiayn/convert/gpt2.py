"""GPT-2 in and out: a HuggingFace `GPT2LMHeadModel` folder <-> an aiayn decoder-only model.

GPT-2 (Radford et al. 2019) is the paper's decoder stack without encoder-decoder attention, with
the LayerNorm moved to each sub-layer's input and a final LayerNorm (`norm_first`), learned
positions, GELU in its tanh approximation (`gelu_tanh`), unscaled embeddings and the output
projection tied to the token embedding. Its `Conv1D` layers keep weights as (in, out), the
transpose of a Linear's, and attention's W^Q, W^K, W^V come as one (d, 3d) matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from aiayn.convert.hf import read_config, read_weights
from aiayn.data.bytelevel import ByteLevelTokenizer
from aiayn.data.tokenizer import TOKENIZER_FILE, TextTokenizer, Tokenizer
from aiayn.files import atomic_write
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import LanguageModel

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": None,
               "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}  # fmt: skip
"""HuggingFace's `activation_function` -> ours (None: not supported)."""
_EXPORTED_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def model_config(hf: dict[str, Any], file: Path, tokenizer: TextTokenizer) -> ModelConfig:
    """Our ModelConfig for a GPT-2 `config.json`; what we cannot compute is refused, naming
    the field."""

    def refuse(field: str, why: str) -> ValueError:
        return ValueError(f"{file}: {field} {hf.get(field)!r}: {why}")

    if hf.get("model_type") != "gpt2":
        raise refuse("model_type", "not a GPT-2 model (use the import format of its family)")
    activation = ACTIVATIONS.get(hf.get("activation_function", "gelu_new"))
    if activation is None:
        supported = ", ".join(sorted(k for k, v in ACTIVATIONS.items() if v))
        raise refuse("activation_function", f"not supported (supported: {supported})")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise refuse("scale_attn_by_inverse_layer_idx", "attention scaled per layer: not supported")
    if not hf.get("scale_attn_weights", True):
        raise refuse("scale_attn_weights", "unscaled attention is not supported")
    if hf.get("add_cross_attention"):
        raise refuse("add_cross_attention", "a GPT-2 with cross-attention is not supported")
    vocab_size = hf["vocab_size"]
    if tokenizer.vocab_size > vocab_size:
        raise refuse(
            "vocab_size", f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model"
        )
    return ModelConfig(
        kind="decoder-only",
        vocab_size=vocab_size,
        d_model=hf["n_embd"],
        n_heads=hf["n_head"],
        d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        n_encoder_layers=0,
        n_decoder_layers=hf["n_layer"],
        dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        max_len=hf["n_positions"],
        norm_first=True,
        positions="learned",
        activation=activation,
        scale_embeddings=False,
        share_embeddings=True,
        tie_output=hf.get("tie_word_embeddings", True),
        init="gpt2",
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )


def import_hf_gpt2(folder: str | Path) -> tuple[LanguageModel, TextTokenizer]:
    """A GPT2LMHeadModel folder (config.json, model.safetensors or pytorch_model.bin, and
    tokenizer.json or vocab.json + merges.txt; or the `tokenizer.model` our own hf-gpt2
    export writes) as our model (eval mode) and tokenizer.

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: A setting we cannot compute, or weights that do not fit (named).
    """
    folder = Path(folder)
    hf = read_config(folder)
    if (folder / TOKENIZER_FILE).is_file():  # exported from a run of ours (SentencePiece)
        tokenizer: TextTokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    else:
        tokenizer = ByteLevelTokenizer.from_files(folder)
    config = model_config(hf, folder / "config.json", tokenizer)
    weights = {k.removeprefix("transformer."): v for k, v in read_weights(folder).items()}
    model = LanguageModel(config)
    ours = _from_hf(weights, config, folder)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: the weights do not fit config.json: missing {missing}")
    return model.eval(), tokenizer


def _from_hf(hf: dict[str, Tensor], config: ModelConfig, folder: Path) -> dict[str, Tensor]:
    """HuggingFace GPT-2 tensor names and layouts -> ours."""

    def take(name: str) -> Tensor:
        if name not in hf:
            raise ValueError(f"{folder}: the weights have no {name} (config.json names more)")
        return hf[name].float()

    d = config.d_model
    ours = {"embed.tokens.weight": take("wte.weight"), "embed.positions.weight": take("wpe.weight")}
    for i in range(config.n_decoder_layers):
        hf_layer, layer = f"h.{i}.", f"decoder.layers.{i}."
        qkv_w, qkv_b = take(hf_layer + "attn.c_attn.weight").T, take(hf_layer + "attn.c_attn.bias")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            ours[f"{layer}self_attn.{proj}.weight"] = qkv_w[j * d : (j + 1) * d]
            ours[f"{layer}self_attn.{proj}.bias"] = qkv_b[j * d : (j + 1) * d]
        pairs = {
            "self_attn.out_proj": ("attn.c_proj", True),
            "feed_forward.linear1": ("mlp.c_fc", True),
            "feed_forward.linear2": ("mlp.c_proj", True),
            "self_attn_residual.norm": ("ln_1", False),
            "feed_forward_residual.norm": ("ln_2", False),
        }
        for name, (hf_name, conv1d) in pairs.items():
            weight = take(f"{hf_layer}{hf_name}.weight")
            ours[f"{layer}{name}.weight"] = weight.T if conv1d else weight
            ours[f"{layer}{name}.bias"] = take(f"{hf_layer}{hf_name}.bias")
    ours["decoder.norm.weight"], ours["decoder.norm.bias"] = take("ln_f.weight"), take("ln_f.bias")
    if config.tie_output:
        ours["out_proj.weight"] = ours["embed.tokens.weight"]
    else:
        ours["out_proj.weight"] = take("lm_head.weight")
    return {name: tensor.contiguous() for name, tensor in ours.items()}


def check_exportable(config: ModelConfig) -> None:
    """Raise a ValueError naming each option GPT-2's architecture cannot express."""
    required = {
        "kind": "decoder-only",
        "norm_first": True,
        "positions": "learned",
        "scale_embeddings": False,
    }
    wrong = [f"{k}={getattr(config, k)!r} (GPT-2: {v!r})" for k, v in required.items()
             if getattr(config, k) != v]  # fmt: skip
    if config.activation not in _EXPORTED_ACTIVATION:
        wrong.append(f"activation={config.activation!r}")
    if config.d_key != config.d_head:
        wrong.append(f"d_k={config.d_k} (GPT-2: d_model / n_heads, {config.d_head})")
    if wrong:
        raise ValueError(f"cannot export as hf-gpt2: {', '.join(wrong)}")


def export_hf_gpt2(model: LanguageModel, tokenizer: TextTokenizer, out_dir: str | Path) -> Path:
    """Write `config.json`, `model.safetensors` and the tokenizer (`tokenizer.json` for a
    byte-level BPE, which GPT2TokenizerFast loads; else our `tokenizer.model`) so that
    `GPT2LMHeadModel.from_pretrained(out_dir)` computes our logits."""
    config = model.config
    check_exportable(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().float().cpu() for name, t in model.state_dict().items()}
    hf = {"wte.weight": state["embed.tokens.weight"], "wpe.weight": state["embed.positions.weight"]}
    for i in range(config.n_decoder_layers):
        hf_layer, layer = f"h.{i}.", f"decoder.layers.{i}."
        attn = [f"{layer}self_attn.{p}_proj" for p in "qkv"]
        hf[hf_layer + "attn.c_attn.weight"] = torch.cat([state[a + ".weight"] for a in attn]).T
        hf[hf_layer + "attn.c_attn.bias"] = torch.cat([state[a + ".bias"] for a in attn])
        for name, hf_name, conv1d in (
            ("self_attn.out_proj", "attn.c_proj", True),
            ("feed_forward.linear1", "mlp.c_fc", True),
            ("feed_forward.linear2", "mlp.c_proj", True),
            ("self_attn_residual.norm", "ln_1", False),
            ("feed_forward_residual.norm", "ln_2", False),
        ):
            weight = state[f"{layer}{name}.weight"]
            hf[f"{hf_layer}{hf_name}.weight"] = weight.T if conv1d else weight
            hf[f"{hf_layer}{hf_name}.bias"] = state[f"{layer}{name}.bias"]
    hf["ln_f.weight"], hf["ln_f.bias"] = state["decoder.norm.weight"], state["decoder.norm.bias"]
    tensors = {f"transformer.{name}": t.contiguous() for name, t in hf.items()}
    if not config.tie_output:
        tensors["lm_head.weight"] = state["out_proj.weight"].contiguous()
    atomic_write(out_dir / "model.safetensors", safetensors.torch.save(tensors, {"format": "pt"}))
    atomic_write(out_dir / "config.json", json.dumps(hf_config(config), indent=2) + "\n")
    tokenizer.save_to(out_dir)
    return out_dir


def hf_config(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.n_decoder_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "activation_function": _EXPORTED_ACTIVATION[config.activation],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_output,
        "bos_token_id": config.bos_id,
        "eos_token_id": config.eos_id,
    }
