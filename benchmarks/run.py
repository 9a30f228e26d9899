"""Run every benchmark, each engine in its own child process, back to back on the same batches;
print a Markdown table of ratios against the anchors and write the figures as JSON.

    python -m benchmarks.run [--quick] [--only training,decoding,attention] [--out FILE.json]

Absolute figures drift 10-20% between runs on a shared CPU: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

TRAINING_ENGINES = ["torch", "marian", "aiayn"]  # the first is the anchor


def child(module: str, *args: str) -> dict:
    """Run `python -m module args` and parse the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def training_rows(sizes: list[str], seconds: float, ceilings: dict) -> list[dict]:
    rows = []
    for size in sizes:
        for dtype in ("fp32", "bf16"):
            for engine in TRAINING_ENGINES:
                args = ["--engine", engine, "--size", size, "--dtype", dtype]
                row = child("benchmarks.training", *args, "--seconds", str(seconds))
                row["mfu_bf16_peak"] = row["model_gflops_per_s"] / ceilings["bf16_gflops"]
                rows.append(row)
                print(f"  {size} {dtype} {engine}: {row['tgt_tokens_per_s']:.0f} tok/s", flush=True)
    return rows


def training_table(rows: list[dict]) -> str:
    anchor = {
        r["size"]: r for r in rows if r["engine"] == TRAINING_ENGINES[0] and r["dtype"] == "fp32"
    }
    lines = [
        "| size | dtype | engine | target tok/s | vs torch fp32 | MFU (bf16 peak) | peak RSS MB "
        "| vs torch same dtype |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        same = next(
            a for a in rows
            if a["size"] == r["size"] and a["dtype"] == r["dtype"]
            and a["engine"] == TRAINING_ENGINES[0]
        )  # fmt: skip
        lines.append(
            f"| {r['size']} | {r['dtype']} | {r['engine']} | {r['tgt_tokens_per_s']:,.0f} | "
            f"{r['tgt_tokens_per_s'] / anchor[r['size']]['tgt_tokens_per_s']:.2f}x | "
            f"{r['mfu_bf16_peak']:.0%} | {r['peak_rss_mb']:,.0f} | "
            f"{r['tgt_tokens_per_s'] / same['tgt_tokens_per_s']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, small size only")
    parser.add_argument(
        "--only",
        default="training,decoding,attention",
        help="comma-separated: training, decoding, attention",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    results: dict = {"machine": machine()}
    print("ceilings ...", flush=True)
    results["ceilings"] = child("benchmarks.ceilings")
    c = results["ceilings"]
    tables = [
        f"Matrix multiply 2048^3: fp32 {c['fp32_gflops']:.0f} GFLOP/s, "
        f"bf16 {c['bf16_gflops']:.0f} GFLOP/s ({c['threads']} threads)"
    ]
    sizes = ["multi30k"] if args.quick else ["multi30k", "paper-base"]
    if "training" in parts:
        print("training ...", flush=True)
        rows = training_rows(sizes, 3.0 if args.quick else 20.0, c)
        results["training"] = rows
        tables.append(training_table(rows))
    if "decoding" in parts:
        from benchmarks.decode_race import decoding_rows, decoding_table

        print("decoding ...", flush=True)
        results["decoding"] = decoding_rows(sizes, quick=args.quick)
        tables.append(decoding_table(results["decoding"]))
    if "attention" in parts:
        from benchmarks.attention import run_all, table

        print("attention ...", flush=True)
        results["attention"] = run_all(args.quick, threads=None)
        tables.append(table(results["attention"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
