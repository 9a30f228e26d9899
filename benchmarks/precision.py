"""What decoding in bf16 or int8 costs and gains on a trained run: sacreBLEU on a test set, outputs
identical to fp32's, and sentences per second, for each precision (`aiayn.model.precision`) and
search, all through `aiayn.load(RUN_DIR, precision=...).translate` in one process.

    python -m benchmarks.precision RUN_DIR [--checkpoint averaged] [--split test2016]
        [--beams 1 4] [--precisions fp32 int8 bf16] [--threads N] [--out FILE]

bf16 is skipped (and the table says so) on a CPU without native bf16, where it would time the
emulation. Prints a Markdown table and writes the rows, with the machine, as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import aiayn
from aiayn.evaluate.metrics import bleu
from aiayn.machine import cpu_has_native_bf16
from benchmarks.decoding import measure, test_set
from benchmarks.harness import machine


def precision_rows(
    run_dir: str,
    *,
    checkpoint: str,
    split: str | None,
    beams: list[int],
    precisions: list[str],
    max_tokens: int = 6000,
) -> list[dict]:
    """One row per precision and beam; fp32 first, as the reference of the others."""
    rows, reference = [], {}
    for precision in precisions:
        model = aiayn.load(run_dir, checkpoint, precision=precision)
        sources, references = test_set(model, split)
        model.translate(sources[:16], beam=max(beams))  # warm-up
        for beam in beams:
            row, outputs = measure(model, sources, beam=beam, use_cache=True, max_tokens=max_tokens)
            reference.setdefault(beam, outputs)
            score = bleu(outputs, references)
            same = sum(a == b for a, b in zip(outputs, reference[beam], strict=True))
            rows.append(
                {**row, "precision": precision, "bleu": score.score,
                 "signature": score.signature, "same_as_fp32": same}
            )  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| precision | search | sentences/s | vs fp32 | BLEU | vs fp32 | same output as fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = next(b for b in rows if b["beam"] == r["beam"])
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(
            f"| {r['precision']} | {search} | {r['sentences_per_s']:.1f} | "
            f"{r['sentences_per_s'] / base['sentences_per_s']:.2f}x | {r['bleu']:.2f} | "
            f"{r['bleu'] - base['bleu']:+.2f} | {r['same_as_fp32']}/{r['sentences']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", help="default: the data set's test split")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/precision.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = ["fp32"] + [p for p in args.precisions if p != "fp32"]
    skipped = []
    if "bf16" in precisions and not cpu_has_native_bf16():
        precisions.remove("bf16")
        skipped.append("bf16 (this CPU has no native bf16: it would time the emulation)")
    rows = precision_rows(args.run_dir, checkpoint=args.checkpoint, split=args.split,
                          beams=args.beams, precisions=precisions)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(table(rows))
    print(f"\nsacreBLEU {rows[0]['signature']}")
    for what in skipped:
        print(f"skipped: {what}")


if __name__ == "__main__":
    main()
