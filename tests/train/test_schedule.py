"""Learning-rate schedules: Eq. 3's shape and peak, warm-ups, cosine's end, the dispatcher."""

from __future__ import annotations

import math

import pytest

from aiayn.config import TrainConfig
from aiayn.train.schedule import cosine_lr, inverse_sqrt_lr, learning_rate, noam_lr


def test_noam_follows_equation_3():
    d_model, warmup = 512, 4000
    lrs = [noam_lr(s, d_model=d_model, warmup_steps=warmup) for s in range(0, 20001)]
    assert lrs[0] == 0.0
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == warmup
    assert lrs[warmup] == pytest.approx(d_model**-0.5 * warmup**-0.5)  # ~7.0e-4 for base
    assert lrs[2000] == pytest.approx(lrs[4000] / 2)  # linear warm-up
    assert lrs[16000] == pytest.approx(lrs[4000] / 2)  # inverse square root decay
    assert noam_lr(100, d_model=512, warmup_steps=4000, scale=2.0) == pytest.approx(2 * lrs[100])


def test_inverse_sqrt_is_continuous_at_its_peak():
    assert inverse_sqrt_lr(500, peak=1e-3, warmup_steps=1000) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(1000, peak=1e-3, warmup_steps=1000) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(4000, peak=1e-3, warmup_steps=1000) == pytest.approx(5e-4)


def test_cosine_reaches_its_floor():
    kwargs = dict(peak=1e-3, warmup_steps=100, total_steps=1100, floor=1e-5)
    assert cosine_lr(100, **kwargs) == pytest.approx(1e-3)
    assert cosine_lr(600, **kwargs) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(1100, **kwargs) == pytest.approx(1e-5) == cosine_lr(5000, **kwargs)


@pytest.mark.parametrize("schedule", ["noam", "inverse_sqrt", "cosine", "constant"])
def test_every_schedule_warms_up_from_zero(schedule):
    config = TrainConfig(schedule=schedule, warmup_steps=10, max_steps=100, lr=1e-3)
    lrs = [learning_rate(config, s, d_model=64) for s in range(0, 11)]
    assert lrs[0] == 0.0 and all(a < b for a, b in zip(lrs[:-1], lrs[1:], strict=True))
    assert all(math.isfinite(x) and x > 0 for x in lrs[1:])
