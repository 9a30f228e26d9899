"""What a training run will do, resolved from its config before anything runs: `aiayn train
--dry-run` prints it (for any number of processes, without starting them or reading data).

The memory figure is an estimate, stated as one: fp32 weights, gradients and Adam's two moments
(16 bytes per parameter, on every process under DDP; a 1/world_size share under FSDP, plus the
whole weights and gradient of the largest layer, gathered for its turn), plus the activations
one batch keeps for the backward pass, counted per token and layer after Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models", §4: 34 d + 5 h s bytes
per token and layer in 16-bit; twice that in fp32; with activation checkpointing each layer's
input and one layer's full set), plus the output layer's logits, their log-softmax and its
gradient in fp32. It leaves out the allocator's slack and the framework (~1-2 GB on a GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aiayn.config import RunConfig
from aiayn.model.transformer import build_model
from aiayn.train.parallel import transformer_layers

ADAM_BYTES_PER_PARAMETER = 16
"""fp32 weight, gradient and two Adam moments."""


@dataclass(frozen=True)
class TrainPlan:
    """A run's resolved plan (`plan_training`); `str()` is the printed form."""

    world_size: int
    device: str
    precision: str
    strategy: str
    """`ddp` or `fsdp` (`train.strategy`; one process: `single`)."""
    activation_checkpointing: bool
    parameters: int
    max_tokens: int
    """Tokens per batch and side per process, padding included (data.max_tokens)."""
    accumulate: int
    """Batches per process and update (gradient accumulation)."""
    updates: int
    schedule: str
    checkpoints: str
    state_gib: float
    """Weights, gradients and optimizer state per process."""
    activation_gib: float
    """Activations of one batch per process (estimate)."""

    @property
    def tokens_per_update(self) -> int:
        """Padded tokens per side and update, over every process and accumulated batch."""
        return self.max_tokens * self.world_size * self.accumulate

    def __str__(self) -> str:
        total = self.state_gib + self.activation_gib
        return "\n".join([
            f"processes: {self.world_size} (world size), device {self.device}, "
            f"precision {self.precision}, strategy {self.strategy}"
            f"{', activation checkpointing' if self.activation_checkpointing else ''}",
            f"model: {self.parameters:,} parameters (with the configured vocabulary)",
            f"batches: {self.max_tokens:,} tokens per side and process, {self.accumulate} per "
            f"update -> {self.tokens_per_update:,} tokens per side and update",
            f"updates: {self.updates:,}; {self.schedule}",
            f"checkpoints: {self.checkpoints}",
            f"memory per process (estimate): {total:.2f} GiB = {self.state_gib:.2f} weights, "
            f"gradients and Adam{' (sharded)' if self.strategy == 'fsdp' else ''} + "
            f"{self.activation_gib:.2f} activations of one batch",
        ])  # fmt: skip


def plan_training(config: RunConfig, *, world_size: int, device: str, precision: str) -> TrainPlan:
    """The plan of `config` over `world_size` processes on `device` in `precision` (as
    `aiayn.machine.resolve_precision` gives it).

    Raises:
        ValueError: world_size < 1.
    """
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    tc, data, mc = config.train, config.data, config.model
    model_config = mc.replace(vocab_size=max(mc.vocab_size, data.vocab_size))
    with torch.device("meta"):
        model = build_model(model_config)
    parameters = sum(p.numel() for p in model.parameters())
    strategy = tc.strategy if world_size > 1 else "single"
    state = parameters * ADAM_BYTES_PER_PARAMETER
    if strategy == "fsdp":
        largest = max(
            sum(p.numel() for p in layer.parameters()) for layer in transformer_layers(model)
        )
        state = state / world_size + largest * 8  # + one layer's whole fp32 weights and gradient
    target = tc.tokens_per_update or data.max_tokens * world_size
    accumulate = max(1, math.ceil(target / (data.max_tokens * world_size)))
    return TrainPlan(
        world_size=world_size,
        device=device,
        precision=precision,
        strategy=strategy,
        activation_checkpointing=tc.activation_checkpointing,
        parameters=parameters,
        max_tokens=data.max_tokens,
        accumulate=accumulate,
        updates=tc.max_steps,
        schedule=_schedule(config),
        checkpoints=_checkpoints(config),
        state_gib=state / 2**30,
        activation_gib=_activation_bytes(
            model_config,
            data.max_tokens,
            data.max_len or mc.max_len,
            precision,
            recompute=tc.activation_checkpointing,
        )
        / 2**30,
    )


def _schedule(config: RunConfig) -> str:
    tc, d = config.train, config.model.d_model
    if tc.schedule == "noam":  # Eq. 3 peaks at warmup_steps
        peak = tc.lr_scale * d**-0.5 * max(tc.warmup_steps, 1) ** -0.5
        return f"Eq. 3 (noam), warm-up {tc.warmup_steps:,}, peak lr {peak:.2e}"
    return f"{tc.schedule}, warm-up {tc.warmup_steps:,}, peak lr {tc.lr:.2e}"


def _checkpoints(config: RunConfig) -> str:
    tc = config.train
    every = [n for n in (tc.eval_every, tc.save_every) if n]
    if not every:
        return f"at each epoch's validation; the last {tc.keep_last} kept, and the best"
    step = min(every)
    return (
        f"every {step:,} updates ({tc.max_steps // step:,} in all), the last {tc.keep_last} "
        "kept, and the best"
    )


def _activation_bytes(
    config, tokens: int, longest: int, precision: str, *, recompute: bool = False
) -> float:
    """Korthikanti et al.'s per-token, per-layer count (16-bit: 34 d + 5 h s), doubled in fp32;
    decoder layers with cross-attention count 1.5 layers; s is the longest sentence training
    keeps, bounded by the batch; plus fp32 logits, log-softmax and gradient over the
    vocabulary. With `recompute` (activation checkpointing) each layer keeps only its input
    (fp32: d values per token) and one layer at a time its full set."""
    width = 2 if precision in ("bf16", "fp16") else 4
    s = min(longest, tokens)
    per_layer = (34 * config.d_model + 5 * config.n_heads * s) * width / 2
    cross = 1.5 if config.kind == "encoder-decoder" else 1.0
    layers = config.n_encoder_layers * (config.kind == "encoder-decoder")
    layers += config.n_decoder_layers * cross
    if recompute:
        kept = (layers + 1) * 4 * config.d_model + cross * per_layer
    else:
        kept = layers * per_layer
    return tokens * (kept + 3 * 4 * config.vocab_size)
