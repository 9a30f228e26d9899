"""Training curves: one PNG per curve that has data."""

from __future__ import annotations

import pytest

from aiayn.evaluate.plots import plot_curves


def test_only_curves_with_data_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    records = [{"kind": "train", "step": s, "loss": 1 / s, "lr": 1e-3} for s in range(1, 5)]
    paths = plot_curves(records, tmp_path / "plots")
    assert [p.name for p in paths] == ["loss.png", "lr.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
