"""Export a trained encoder-decoder to HuggingFace's Marian layout (safetensors + config.json),
which `transformers.MarianMTModel` loads and CTranslate2's converter reads.

Marian is the paper's post-norm Transformer with sinusoidal positions, but it lays out the
sines in the first half of the dimensions and the cosines in the second, where §3.5 (and we)
interleave them. Permuting the model dimension the same way in every weight that reads or writes
the residual stream is an exact symmetry of the network, so the exported model computes the same
logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from aiayn.model.attention import MultiHeadAttention
from aiayn.model.config import ModelConfig
from aiayn.model.embedding import sinusoids
from aiayn.model.layers import Residual
from aiayn.model.transformer import Transformer

FORMATS = ("hf-marian",)


def marian_permutation(d_model: int) -> Tensor:
    """Marian dimension m holds our dimension perm[m]: sines (our even dims), then cosines."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def check_exportable(config: ModelConfig) -> None:
    """Raise a ValueError naming each option Marian's architecture cannot express."""
    required = {
        "kind": "encoder-decoder",
        "norm_first": False,
        "positions": "sinusoidal",
        "activation": "relu",
        "scale_embeddings": True,
        "share_embeddings": True,
        "tie_output": True,
    }
    wrong = [
        f"model.{k}={getattr(config, k)!r} (needs {v!r})"
        for k, v in required.items()
        if getattr(config, k) != v
    ]
    if wrong:
        raise ValueError("the hf-marian format cannot express " + ", ".join(wrong))


def marian_config(config: ModelConfig) -> dict:
    """config.json for `transformers.MarianConfig`."""
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": config.vocab_size,
        "decoder_vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "encoder_layers": config.n_encoder_layers,
        "decoder_layers": config.n_decoder_layers,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.d_ff,
        "decoder_ffn_dim": config.d_ff,
        "max_position_embeddings": config.max_len,
        "activation_function": "relu",
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "scale_embedding": True,
        "static_position_embeddings": True,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "bos_token_id": config.bos_id,
        "decoder_start_token_id": config.bos_id,
        "forced_eos_token_id": config.eos_id,
        "torch_dtype": "float32",
    }


def marian_state_dict(model: Transformer) -> dict[str, Tensor]:
    """Our weights under Marian's names, the model dimension permuted (see the module doc)."""
    config = model.config
    check_exportable(config)
    perm = marian_permutation(config.d_model)
    positions = sinusoids(config.max_len, config.d_model)[:, perm]
    out = {
        "model.shared.weight": model.src_embed.tokens.weight[:, perm],
        "model.encoder.embed_positions.weight": positions,
        "model.decoder.embed_positions.weight": positions,
        "final_logits_bias": torch.zeros(1, config.vocab_size),
    }
    for i, layer in enumerate(model.encoder.layers):
        prefix = f"model.encoder.layers.{i}."
        out |= attention_weights(prefix + "self_attn.", layer.self_attn, perm)
        out |= norm_weights(prefix + "self_attn_layer_norm.", layer.self_attn_residual, perm)
        out |= feed_forward_weights(prefix, layer, perm)
    for i, layer in enumerate(model.decoder.layers):
        prefix = f"model.decoder.layers.{i}."
        out |= attention_weights(prefix + "self_attn.", layer.self_attn, perm)
        out |= norm_weights(prefix + "self_attn_layer_norm.", layer.self_attn_residual, perm)
        out |= attention_weights(prefix + "encoder_attn.", layer.cross_attn, perm)
        out |= norm_weights(prefix + "encoder_attn_layer_norm.", layer.cross_attn_residual, perm)
        out |= feed_forward_weights(prefix, layer, perm)
    return {name: tensor.detach().contiguous().clone() for name, tensor in out.items()}


def attention_weights(prefix: str, attn: MultiHeadAttention, perm: Tensor) -> dict[str, Tensor]:
    """q/k/v read the residual stream (permute inputs); out_proj writes it (permute outputs)."""
    out = {}
    for name in ("q_proj", "k_proj", "v_proj"):
        linear = getattr(attn, name)
        out[prefix + name + ".weight"] = linear.weight[:, perm]
        out[prefix + name + ".bias"] = linear.bias
    out[prefix + "out_proj.weight"] = attn.out_proj.weight[perm]
    out[prefix + "out_proj.bias"] = attn.out_proj.bias[perm]
    return out


def norm_weights(prefix: str, residual: Residual, perm: Tensor) -> dict[str, Tensor]:
    return {
        prefix + "weight": residual.norm.weight[perm],
        prefix + "bias": residual.norm.bias[perm],
    }


def feed_forward_weights(prefix: str, layer: torch.nn.Module, perm: Tensor) -> dict[str, Tensor]:
    ff = layer.feed_forward
    return {
        prefix + "fc1.weight": ff.linear1.weight[:, perm],
        prefix + "fc1.bias": ff.linear1.bias,
        prefix + "fc2.weight": ff.linear2.weight[perm],
        prefix + "fc2.bias": ff.linear2.bias[perm],
        **norm_weights(prefix + "final_layer_norm.", layer.feed_forward_residual, perm),
    }


def export_hf_marian(
    model: Transformer, out_dir: str | Path, *, tokenizer_model: bytes | None = None
) -> Path:
    """Write `model.safetensors` and `config.json` to `out_dir`, and with a serialized
    SentencePiece model also Marian's `source.spm`, `target.spm` and `vocab.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(
        marian_state_dict(model), out_dir / "model.safetensors", metadata={"format": "pt"}
    )
    (out_dir / "config.json").write_text(json.dumps(marian_config(model.config), indent=2))
    if tokenizer_model is not None:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_proto=tokenizer_model)
        vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
        for name in ("source.spm", "target.spm"):
            (out_dir / name).write_bytes(tokenizer_model)
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    return out_dir
