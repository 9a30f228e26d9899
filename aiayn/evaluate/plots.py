"""Training curves as PNG files: loss (training and validation), learning rate (§5.3, Eq. 3) and
BLEU/chrF over updates. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVES = {
    "loss": ("loss per target token", [("train", "loss"), ("valid", "loss")]),
    "lr": ("learning rate", [("train", "lr")]),
    "bleu": ("score (0-100)", [("valid", "bleu"), ("valid", "chrf")]),
}
"""File name -> (y-axis label, the (record kind, key) series drawn in it)."""


def plot_curves(records: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write `loss.png`, `lr.png` and (when there are scores) `bleu.png` to `out_dir`.

    Args:
        records: metrics.jsonl records, each with `kind` and `step`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (ylabel, series) in CURVES.items():
        points = {s: _series(records, *s) for s in series}
        if not any(points.values()):
            continue
        figure, axes = plt.subplots(figsize=(7, 4))
        for (kind, key), (steps, values) in ((s, p) for s, p in points.items() if p):
            axes.plot(steps, values, label=f"{kind} {key}", marker="o" if kind == "valid" else "")
        axes.set_xlabel("update")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _series(records: Sequence[dict[str, Any]], kind: str, key: str) -> tuple[list, list] | None:
    pairs = [(r["step"], r[key]) for r in records if r.get("kind") == kind and key in r]
    if not pairs:
        return None
    steps, values = zip(*pairs, strict=True)
    return list(steps), list(values)
