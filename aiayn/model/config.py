"""ModelConfig: every hyperparameter of the architecture, with the paper's presets (Table 3).

Names follow the paper's symbols: d_model, d_ff, h (n_heads), N (n_encoder_layers /
n_decoder_layers), P_drop (dropout). Departures from the paper are named options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

ModelKind = Literal["encoder-decoder", "decoder-only"]
Positions = Literal["sinusoidal", "learned", "rope"]
Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]
Init = Literal["xavier", "gpt2"]
SinusoidLayout = Literal["interleaved", "halves"]


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a Transformer (encoder-decoder) or a decoder-only language model."""

    kind: ModelKind = "encoder-decoder"
    """`encoder-decoder` (the paper, §3.1) or `decoder-only` (GPT-2 style language model)."""
    vocab_size: int = 8000
    """Size of the (shared, §3.4) subword vocabulary."""
    d_model: int = 512
    """Width of every sub-layer output and of the embeddings (§3.1)."""
    n_heads: int = 8
    """Attention heads h (§3.2.2); d_head = d_model / n_heads."""
    d_k: int | None = None
    """Query and key width per head; None: d_model / n_heads, as §3.2.2. Smaller is Table 3's
    row (B) ("reducing the attention key size d_k hurts model quality"); values keep
    d_v = d_model / n_heads."""
    d_ff: int = 2048
    """Inner width of the position-wise feed-forward network (§3.3)."""
    n_encoder_layers: int = 6
    """N for the encoder stack (§3.1). Ignored by decoder-only models."""
    n_decoder_layers: int = 6
    """N for the decoder stack (§3.1); the number of layers of a decoder-only model."""
    dropout: float = 0.1
    """P_drop: on sub-layer outputs and on embeddings + positions (§5.4)."""
    attention_dropout: float = 0.0
    """Dropout on attention weights. Not in the paper (tensor2tensor and fairseq offer it)."""
    activation_dropout: float = 0.0
    """Dropout on the feed-forward hidden layer. Not in the paper (tensor2tensor's
    relu_dropout, fairseq's activation_dropout; nn.Transformer always applies `dropout` here)."""
    max_len: int = 1024
    """Longest sequence the positions cover (learned positions need a table this long)."""
    norm_first: bool = False
    """Pre-norm: x + Sublayer(LayerNorm(x)) plus a final LayerNorm per stack. Departure from
    the paper, which normalises after the residual: LayerNorm(x + Sublayer(x)) (§3.1)."""
    positions: Positions = "sinusoidal"
    """`sinusoidal` (§3.5), `learned` (the paper's alternative, Table 3 row E) or `rope`
    (rotary, Su et al. 2021: a departure, applied to queries and keys of self-attention)."""
    sinusoid_layout: SinusoidLayout = "interleaved"
    """Where §3.5's sines and cosines go: `interleaved` (sin on even, cos on odd dimensions, as
    the paper writes PE) or `halves` (all sines, then all cosines: tensor2tensor, Marian)."""
    activation: Activation = "relu"
    """Feed-forward non-linearity: `relu` as in Eq. 2; `gelu` (exact, erf); `gelu_tanh`, the
    tanh approximation GPT-2 computes (its `gelu_new`); or `silu` (x * sigmoid(x), Marian's
    `swish`)."""
    scale_embeddings: bool = True
    """Multiply embeddings by sqrt(d_model) (§3.4). GPT-2 does not."""
    share_embeddings: bool = True
    """One embedding table for source and target (§3.4, shared vocabulary)."""
    tie_output: bool = True
    """Pre-softmax projection shares the target embedding's weights (§3.4)."""
    output_bias: bool = False
    """A bias on the pre-softmax projection (Marian's `final_logits_bias`); the paper has none."""
    init: Init = "xavier"
    """`xavier` (fairseq / Annotated Transformer) or `gpt2` (normal 0.02, scaled residuals)."""
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.d_k is not None and self.d_k <= 0:
            raise ValueError(f"d_k must be positive, got {self.d_k}")
        if self.positions == "rope" and self.d_key % 2 != 0:
            raise ValueError(f"rotary positions need an even d_k, got {self.d_key}")
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("pad_id", "unk_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) outside the vocabulary (size "
                    f"{self.vocab_size})"
                )
        choices = (("kind", ModelKind), ("positions", Positions), ("activation", Activation),
                   ("init", Init), ("sinusoid_layout", SinusoidLayout))  # fmt: skip
        for name, allowed in choices:  # the YAML loader checks these too; Python callers not
            if getattr(self, name) not in get_args(allowed):
                raise ValueError(
                    f"{name} must be one of {get_args(allowed)}, got {getattr(self, name)!r}"
                )

    @property
    def d_head(self) -> int:
        """d_v = d_model / h (§3.2.2), and d_k too unless `d_k` says otherwise."""
        return self.d_model // self.n_heads

    @property
    def d_key(self) -> int:
        """d_k: `d_k` if set, else `d_head`."""
        return self.d_k if self.d_k is not None else self.d_head

    def replace(self, **changes: object) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: object) -> ModelConfig:
        """A named preset (see `PRESETS`), optionally with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        return PRESETS[name].replace(**changes)


_GPT2 = dict(
    kind="decoder-only",
    norm_first=True,
    positions="learned",
    activation="gelu",
    scale_embeddings=False,
    init="gpt2",
)

PRESETS: dict[str, ModelConfig] = {
    # Table 3, "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1; ~37k shared BPE vocabulary.
    "paper-base": ModelConfig(vocab_size=37000),
    # Table 3, "big": N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3.
    "paper-big": ModelConfig(vocab_size=37000, d_model=1024, n_heads=16, d_ff=4096, dropout=0.3),
    # A translation model that trains on a 2-core CPU within the hour (Multi30k-sized data).
    "cpu-small": ModelConfig(
        vocab_size=8000,
        d_model=256,
        n_heads=4,
        d_ff=1024,
        n_encoder_layers=3,
        n_decoder_layers=3,
        max_len=256,
    ),
    # GPT-2 small (124M with its 50257-token vocabulary).
    "gpt2-small": ModelConfig(
        vocab_size=50257,
        d_model=768,
        n_heads=12,
        d_ff=3072,
        n_encoder_layers=0,
        n_decoder_layers=12,
        max_len=1024,
        **_GPT2,
    ),
    # nanoGPT's "baby GPT" for character-level Tiny Shakespeare.
    "baby-gpt": ModelConfig(
        vocab_size=68,
        d_model=384,
        n_heads=6,
        d_ff=1536,
        n_encoder_layers=0,
        n_decoder_layers=6,
        max_len=256,
        dropout=0.2,
        **_GPT2,
    ),
}
