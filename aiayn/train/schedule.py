"""Learning-rate schedules as pure functions of the update number: the paper's (§5.3, Eq. 3),
fairseq's inverse square root, and cosine decay, each with a linear warm-up.
"""

from __future__ import annotations

import math

from aiayn.config import TrainConfig


def noam_lr(step: int, *, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """Eq. 3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), times `scale`.

    It rises linearly for `warmup_steps` updates, peaks at d_model^-0.5 * warmup_steps^-0.5
    and then decays with the inverse square root of the step. Step 0 gives 0.
    """
    if step <= 0:
        return 0.0
    warmup = max(warmup_steps, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def inverse_sqrt_lr(step: int, *, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to `peak`, then peak * sqrt(warmup_steps / step) (fairseq)."""
    if step <= 0:
        return 0.0
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * math.sqrt(max(warmup_steps, 1) / step)


def cosine_lr(
    step: int, *, peak: float, warmup_steps: int, total_steps: int, floor: float = 0.0
) -> float:
    """Linear warm-up to `peak`, then half a cosine down to `floor` at `total_steps`."""
    if step <= 0:
        return 0.0
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(config: TrainConfig, step: int, *, d_model: int) -> float:
    """The learning rate of update number `step` (counting from 1) under `config.schedule`."""
    if config.schedule == "noam":
        return noam_lr(
            step, d_model=d_model, warmup_steps=config.warmup_steps, scale=config.lr_scale
        )
    if config.schedule == "inverse_sqrt":
        return inverse_sqrt_lr(step, peak=config.lr, warmup_steps=config.warmup_steps)
    if config.schedule == "cosine":
        return cosine_lr(
            step,
            peak=config.lr,
            warmup_steps=config.warmup_steps,
            total_steps=config.max_steps,
            floor=config.min_lr,
        )
    if step <= 0:
        return 0.0
    return config.lr * min(1.0, step / max(config.warmup_steps, 1))
