"""Marian (OPUS-MT) in and out: a HuggingFace `MarianMTModel` folder <-> an aiayn
encoder-decoder.

Marian is the paper's Transformer: post-norm, sinusoidal positions, embeddings scaled by
sqrt(d_model), one vocabulary shared by encoder, decoder and output. What it does differently is
named in ModelConfig, never patched in: sines and cosines in two halves of the dimensions
(`sinusoid_layout: halves`), a bias on the logits (`output_bias`, its `final_logits_bias`), SiLU
(`activation: silu`, its `swish`), EOS id 0 and decoding started from the padding id
(`bos_id = pad_id`). Its tokenizer is a pair of SentencePiece models over one vocabulary
(`aiayn.data.marian_vocab`).

Exporting a model of ours with interleaved sinusoids permutes the model dimension the same way in
every weight that reads or writes the residual stream: an exact symmetry of the network, so the
exported model computes the same logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from aiayn.convert.hf import read_config, read_weights
from aiayn.data.marian_vocab import MarianVocabulary
from aiayn.files import atomic_write
from aiayn.model.attention import MultiHeadAttention
from aiayn.model.config import ModelConfig
from aiayn.model.embedding import sinusoids
from aiayn.model.layers import Residual
from aiayn.model.transformer import Transformer

ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu",
               "gelu_new": "gelu_tanh"}  # fmt: skip
"""HuggingFace's `activation_function` -> ours."""
_EXPORTED_ACTIVATION = {"silu": "swish", "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}


def model_config(hf: dict[str, Any], file: Path, vocabulary: MarianVocabulary) -> ModelConfig:
    """Our ModelConfig for a Marian `config.json`; a variant we cannot compute is refused,
    naming the field."""

    def refuse(field: str, why: str) -> ValueError:
        return ValueError(f"{file}: {field} {hf.get(field)!r}: {why}")

    if hf.get("model_type") != "marian":
        raise refuse("model_type", "not a Marian model (use the import format of its family)")
    for field, supported in (
        ("normalize_before", False),  # pre-norm variants
        ("normalize_embedding", False),  # a LayerNorm on the embeddings
        ("add_final_layer_norm", False),
        ("static_position_embeddings", True),
        ("share_encoder_decoder_embeddings", True),  # untied vocabularies
    ):
        if hf.get(field, supported) != supported:
            raise refuse(field, "this Marian variant is not supported")
    vocab_size = hf["vocab_size"]
    if hf.get("decoder_vocab_size", vocab_size) != vocab_size:
        raise refuse("decoder_vocab_size", f"differs from vocab_size {vocab_size} (untied "
                     "vocabularies are not supported)")  # fmt: skip
    for encoder, decoder in (("encoder_attention_heads", "decoder_attention_heads"),
                             ("encoder_ffn_dim", "decoder_ffn_dim")):  # fmt: skip
        if hf.get(encoder) != hf.get(decoder):
            raise refuse(decoder, f"differs from {encoder} {hf.get(encoder)!r}: not supported")
    activation = ACTIVATIONS.get(hf.get("activation_function", "swish"))
    if activation is None:
        raise refuse("activation_function", f"not supported (supported: {', '.join(ACTIVATIONS)})")
    if vocabulary.vocab_size > vocab_size:
        raise refuse("vocab_size", f"the vocabulary has {vocabulary.vocab_size} pieces, more "
                     "than the model")  # fmt: skip
    for field, ours in (("pad_token_id", vocabulary.pad_id), ("eos_token_id", vocabulary.eos_id)):
        if field in hf and hf[field] != ours:
            raise refuse(field, f"the vocabulary says {ours}")
    return ModelConfig(
        kind="encoder-decoder",
        vocab_size=vocab_size,
        d_model=hf["d_model"],
        n_heads=hf["encoder_attention_heads"],
        d_ff=hf["encoder_ffn_dim"],
        n_encoder_layers=hf["encoder_layers"],
        n_decoder_layers=hf["decoder_layers"],
        dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.0),
        activation_dropout=hf.get("activation_dropout", 0.0),
        max_len=hf["max_position_embeddings"],
        norm_first=False,
        positions="sinusoidal",
        sinusoid_layout="halves",
        activation=activation,
        scale_embeddings=hf.get("scale_embedding", False),
        share_embeddings=True,
        tie_output=hf.get("tie_word_embeddings", True),
        output_bias=True,
        init="xavier",
        pad_id=vocabulary.pad_id,
        unk_id=vocabulary.unk_id,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
    )


def import_hf_marian(folder: str | Path) -> tuple[Transformer, MarianVocabulary]:
    """A MarianMTModel folder (config.json, model.safetensors or pytorch_model.bin, source.spm,
    target.spm, vocab.json) as our model (eval mode) and vocabulary.

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: A variant we cannot compute, or weights that do not fit (named).
    """
    folder = Path(folder)
    hf = read_config(folder)
    vocabulary = MarianVocabulary.from_files(folder, start_id=hf.get("decoder_start_token_id"))
    config = model_config(hf, folder / "config.json", vocabulary)
    weights = read_weights(folder)
    model = Transformer(config)
    ours = {}
    for mine, theirs in name_pairs(config):
        if theirs not in weights:
            raise ValueError(f"{folder}: the weights have no {theirs} (config.json names more)")
        ours[mine] = weights[theirs].float()
    shared = weights.get("model.shared.weight")
    if shared is None:
        raise ValueError(f"{folder}: the weights have no model.shared.weight")
    for name in ("src_embed.tokens.weight", "tgt_embed.tokens.weight"):
        ours[name] = shared.float()
    ours["out_proj.weight"] = shared.float()
    if not config.tie_output:
        ours["out_proj.weight"] = weights["lm_head.weight"].float()
    bias = weights.get("final_logits_bias")
    ours["out_proj.bias"] = (
        torch.zeros(config.vocab_size) if bias is None else bias.float().reshape(-1)
    )
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: the weights do not fit config.json: missing {missing}")
    return model.eval(), vocabulary


def name_pairs(config: ModelConfig) -> list[tuple[str, str]]:
    """(our name, Marian's name) of every per-layer tensor."""
    pairs = []
    attention = [f"{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")]
    norm = ("weight", "bias")
    for side, n, blocks in (
        ("encoder", config.n_encoder_layers, [("self_attn", "self_attn")]),
        ("decoder", config.n_decoder_layers, [("self_attn", "self_attn"),
                                              ("cross_attn", "encoder_attn")]),
    ):  # fmt: skip
        for i in range(n):
            ours, theirs = f"{side}.layers.{i}.", f"model.{side}.layers.{i}."
            for mine, hf_name in blocks:
                pairs += [(f"{ours}{mine}.{a}", f"{theirs}{hf_name}.{a}") for a in attention]
                pairs += [(f"{ours}{mine}_residual.norm.{w}", f"{theirs}{hf_name}_layer_norm.{w}")
                          for w in norm]  # fmt: skip
            for mine, hf_name in (("feed_forward.linear1", "fc1"), ("feed_forward.linear2", "fc2"),
                                  ("feed_forward_residual.norm", "final_layer_norm")):  # fmt: skip
                pairs += [(f"{ours}{mine}.{w}", f"{theirs}{hf_name}.{w}") for w in norm]
    return pairs


def marian_permutation(config: ModelConfig) -> Tensor:
    """Marian dimension m holds our dimension perm[m]: with interleaved sinusoids, sines (our
    even dims) then cosines; with halves, the identity."""
    d = config.d_model
    if config.sinusoid_layout == "halves":
        return torch.arange(d)
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def check_exportable(config: ModelConfig) -> None:
    """Raise a ValueError naming each option Marian's architecture cannot express."""
    required = {
        "kind": "encoder-decoder",
        "norm_first": False,
        "positions": "sinusoidal",
        "share_embeddings": True,
        "tie_output": True,
    }
    wrong = [
        f"model.{k}={getattr(config, k)!r} (needs {v!r})"
        for k, v in required.items()
        if getattr(config, k) != v
    ]
    if config.activation not in _EXPORTED_ACTIVATION:
        wrong.append(f"model.activation={config.activation!r}")
    if config.d_key != config.d_head:
        wrong.append(f"model.d_k={config.d_k} (needs d_model / n_heads, {config.d_head})")
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
        "activation_function": _EXPORTED_ACTIVATION[config.activation],
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "scale_embedding": config.scale_embeddings,
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
    perm = marian_permutation(config)
    positions = sinusoids(config.max_len, config.d_model, config.sinusoid_layout)[:, perm]
    bias = model.out_proj.bias if config.output_bias else torch.zeros(config.vocab_size)
    out = {
        "model.shared.weight": model.src_embed.tokens.weight[:, perm],
        "model.encoder.embed_positions.weight": positions,
        "model.decoder.embed_positions.weight": positions,
        "final_logits_bias": bias.reshape(1, -1),
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
    model: Transformer,
    out_dir: str | Path,
    *,
    tokenizer_model: bytes | None = None,
    vocabulary: MarianVocabulary | None = None,
) -> Path:
    """Write `model.safetensors` and `config.json` to `out_dir`, and Marian's `source.spm`,
    `target.spm` and `vocab.json`: from a Marian vocabulary as it is, or from our joint
    SentencePiece model (serialized), which serves as both."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = safetensors.torch.save(marian_state_dict(model), metadata={"format": "pt"})
    atomic_write(out_dir / "model.safetensors", weights)
    atomic_write(out_dir / "config.json", json.dumps(marian_config(model.config), indent=2))
    if vocabulary is not None:
        vocabulary.save_to(out_dir)
    elif tokenizer_model is not None:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_proto=tokenizer_model)
        vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
        for name in ("source.spm", "target.spm"):
            (out_dir / name).write_bytes(tokenizer_model)
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    return out_dir


MARIAN_CONFIG_KEY = "special:model.yml"
"""The npz entry in which Marian-NMT keeps its training options (YAML bytes, 0-terminated)."""
_EXPECTED = {
    "type": "transformer",
    "transformer-preprocess": "",  # nothing before a sub-layer ...
    "transformer-postprocess": "dan",  # ... and dropout, add, normalize after it: post-norm
    "transformer-postprocess-emb": "d",  # only dropout on the embeddings
    "transformer-train-position-embeddings": False,  # sinusoids
    "tied-embeddings-all": True,  # one vocabulary for encoder, decoder and output
    "transformer-ffn-depth": 2,
    "right-left": False,
}
_NPZ_NAMES = {  # Marian's per-layer names -> ours ("W" matrices are stored (in, out))
    "self_W{}": "self_attn.{}_proj.weight", "self_b{}": "self_attn.{}_proj.bias",
    "context_W{}": "cross_attn.{}_proj.weight", "context_b{}": "cross_attn.{}_proj.bias",
}  # fmt: skip
_NPZ_FIXED = {
    "self_Wo_ln_scale": "self_attn_residual.norm.weight",
    "self_Wo_ln_bias": "self_attn_residual.norm.bias",
    "context_Wo_ln_scale": "cross_attn_residual.norm.weight",
    "context_Wo_ln_bias": "cross_attn_residual.norm.bias",
    "ffn_W1": "feed_forward.linear1.weight",
    "ffn_b1": "feed_forward.linear1.bias",
    "ffn_W2": "feed_forward.linear2.weight",
    "ffn_b2": "feed_forward.linear2.bias",
    "ffn_ffn_ln_scale": "feed_forward_residual.norm.weight",
    "ffn_ffn_ln_bias": "feed_forward_residual.norm.bias",
}


def import_marian_npz(folder: str | Path) -> tuple[Transformer, MarianVocabulary]:
    """The files OPUS-MT publishes (Marian-NMT's own): one `*.npz` with the weights and its
    `special:model.yml` options, one `*.vocab.yml`, `source.spm` and `target.spm`; converted
    directly, no transformers in the way. Marian decodes from a zero vector, which becomes a
    `<pad>` piece added at the end of the vocabulary with a zero embedding.

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: An option we cannot compute (names the npz and the option), or weights
            that do not fit.
    """
    import numpy as np
    import yaml

    folder = Path(folder)
    found = sorted(folder.glob("*.npz"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise FileNotFoundError(f"{folder}: {what} *.npz files (Marian's weights); need one")
    file = found[0]
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{file}: not a numpy .npz file ({error})") from None
    if MARIAN_CONFIG_KEY not in arrays:
        raise ValueError(f"{file}: no {MARIAN_CONFIG_KEY} entry (not a Marian model)")
    text = arrays.pop(MARIAN_CONFIG_KEY).tobytes().decode("utf-8").rstrip("\0")
    options = yaml.safe_load(text) or {}
    where = f"{file}: {MARIAN_CONFIG_KEY}"
    for key, expected in _EXPECTED.items():
        if options.get(key, expected) != expected:
            raise ValueError(f"{where}: {key} {options.get(key)!r} is not supported (needs "
                             f"{expected!r})")  # fmt: skip
    if "Wpos" in arrays or "Wemb" not in arrays:
        raise ValueError(f"{where}: learned positions or separate embeddings are not supported")
    named = str(options.get("transformer-ffn-activation", "relu"))
    activation = ACTIVATIONS.get(named)
    if activation is None:
        raise ValueError(f"{where}: transformer-ffn-activation {named!r} is not supported")

    vocab = _marian_vocab_with_pad(folder)
    vocabulary = MarianVocabulary.from_files(folder, vocab=vocab)
    embedding = torch.from_numpy(arrays.pop("Wemb")).float()
    if embedding.shape[0] != vocabulary.vocab_size - 1:
        raise ValueError(f"{file}: Wemb has {embedding.shape[0]} rows, the vocabulary "
                         f"{vocabulary.vocab_size - 1} pieces")  # fmt: skip
    d_model = embedding.shape[1]
    depth = {side: int(options.get(f"{side[:3]}-depth", 6)) for side in ("encoder", "decoder")}
    config = ModelConfig(
        kind="encoder-decoder",
        vocab_size=vocabulary.vocab_size,
        d_model=d_model,
        n_heads=int(options.get("transformer-heads", 8)),
        d_ff=arrays["encoder_l1_ffn_W1"].shape[1],
        n_encoder_layers=depth["encoder"],
        n_decoder_layers=depth["decoder"],
        dropout=float(options.get("transformer-dropout", 0.1)),
        max_len=max(512, int(options.get("max-length", 0))),
        norm_first=False,
        positions="sinusoidal",
        sinusoid_layout="halves",
        activation=activation,
        scale_embeddings=True,
        output_bias=True,
        pad_id=vocabulary.pad_id,
        unk_id=vocabulary.unk_id,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
    )
    zero_row = torch.zeros(1, d_model)
    ours = {"src_embed.tokens.weight": torch.cat([embedding, zero_row])}
    ours["tgt_embed.tokens.weight"] = ours["out_proj.weight"] = ours["src_embed.tokens.weight"]
    bias = arrays.pop("decoder_ff_logit_out_b", None)
    if bias is None:
        raise ValueError(f"{file}: no decoder_ff_logit_out_b")
    ours["out_proj.bias"] = torch.cat([torch.from_numpy(bias).float().reshape(-1), torch.zeros(1)])
    for side in ("encoder", "decoder"):
        for i in range(depth[side]):
            prefix = f"{side}_l{i + 1}_"
            for name in [n for n in arrays if n.startswith(prefix)]:
                ours[f"{side}.layers.{i}.{_npz_name(name.removeprefix(prefix), file)}"] = _ours(
                    arrays.pop(name)
                )
    if arrays:
        raise ValueError(f"{file}: entries we do not know: {', '.join(sorted(arrays)[:5])}")
    model = Transformer(config)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{file}: the weights do not fit its options: missing {missing[:3]}, extra "
            f"{unexpected[:3]}"
        )
    return model.eval(), vocabulary


def _npz_name(name: str, file: Path) -> str:
    if name in _NPZ_FIXED:
        return _NPZ_FIXED[name]
    for pattern, ours in _NPZ_NAMES.items():
        head = pattern[:-2]
        if name.startswith(head) and len(name) == len(head) + 1 and name[-1] in "qkvo":
            return ours.format({"o": "out"}.get(name[-1], name[-1]))
    raise ValueError(f"{file}: a layer entry we do not know: {name}")


def _ours(array: Any) -> Tensor:
    """Marian's (in, out) matrices are our Linear weights transposed; its (1, n) rows, vectors."""
    tensor = torch.from_numpy(array).float()
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        return tensor.reshape(-1)
    return tensor.T.contiguous()


def _marian_vocab_with_pad(folder: Path) -> dict[str, int]:
    """The `*.vocab.yml` (or vocab.json) with `<pad>` appended, as decoding starts from it."""
    from aiayn.data.marian_vocab import read_vocabulary

    vocab = read_vocabulary(folder)
    if "<pad>" not in vocab:
        vocab["<pad>"] = max(vocab.values()) + 1
    return vocab
