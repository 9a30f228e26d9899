"""Run every benchmark, each engine in its own child process, back to back on the same batches;
print a Markdown table of ratios against the anchors and write the figures as JSON.

    python -m benchmarks.run [--quick] [--only training,decoding,attention] [--out FILE.json]
        [--device cuda] [--seconds S] [--tgt-tokens N]

Absolute figures drift 10-20% between runs on a shared CPU: compare ratios within one run.
On a GPU (`--device cuda`) training batches hold 25,000 target tokens (the paper's, §5.1) unless
`--tgt-tokens` says otherwise, decoding races the engines that run there (`race_engines`), and
the attention table (a CPU study) is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.attention import run_all, table
from benchmarks.decode_race import decoding_rows, decoding_table
from benchmarks.harness import child, machine

TRAINING_ENGINES = ["torch", "marian", "aiayn"]  # the first is the anchor


def training_dtypes(native_bf16: bool) -> tuple[str, ...]:
    """fp32 always (the first-class case on a CPU without native bf16); bf16 only where it is
    native: elsewhere a bf16 step takes minutes and measures the emulation, not the engines."""
    return ("fp32", "bf16") if native_bf16 else ("fp32",)


def training_rows(
    sizes: list[str], seconds: float, ceilings: dict, *, device: str = "cpu", tgt_tokens: int = 2000
) -> list[dict]:
    rows = []
    peak = ceilings["bf16_gflops"] if ceilings["native_bf16"] else ceilings["fp32_gflops"]
    for size in sizes:
        for dtype in training_dtypes(ceilings["native_bf16"]):
            for engine in TRAINING_ENGINES:
                args = ["--engine", engine, "--size", size, "--dtype", dtype, "--device", device,
                        "--tgt-tokens", str(tgt_tokens)]  # fmt: skip
                row = child("benchmarks.training", *args, "--seconds", str(seconds))
                row["mfu"] = row["model_gflops_per_s"] / peak
                rows.append(row)
                print(f"  {size} {dtype} {engine}: {row['tgt_tokens_per_s']:.0f} tok/s", flush=True)
    return rows


def training_table(rows: list[dict], machine: dict) -> str:
    anchor = {
        r["size"]: r for r in rows if r["engine"] == TRAINING_ENGINES[0] and r["dtype"] == "fp32"
    }
    peak = "bf16" if machine["native_bf16"] else "fp32"
    memory = "peak GPU MB" if machine.get("device", "cpu").startswith("cuda") else "peak RSS MB"
    lines = [
        f"| size | dtype | engine | target tok/s | vs torch fp32 | MFU ({peak} peak) | {memory} "
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
            f"{r['mfu']:.0%} | {r['peak_mb']:,.0f} | "
            f"{r['tgt_tokens_per_s'] / same['tgt_tokens_per_s']:.2f}x |"
        )
    if not machine["native_bf16"]:
        lines.append(
            f"\nbf16 rows skipped: {machine['bf16_reason']}, so bf16 matrix multiplies are "
            "emulated here (see the ceilings) and `precision: auto` trains in fp32."
        )
    batch = {r.get("tgt_tokens_per_batch") for r in rows} - {None}
    if batch:
        lines.append(f"\nBatches of about {', '.join(f'{b:,}' for b in sorted(batch))} "
                     "target tokens.")  # fmt: skip
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seconds", type=float, help="per training engine (default 20, quick 3)")
    parser.add_argument("--tgt-tokens", type=int, help="per training batch (CPU 2,000, GPU 25,000)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    gpu = args.device.startswith("cuda")
    results: dict = {"machine": machine(args.device)}
    print(f"machine: {results['machine']['summary']}\nceilings ...", flush=True)
    results["ceilings"] = child("benchmarks.ceilings", "--device", args.device)
    c = results["ceilings"]
    emulated = "" if c["native_bf16"] else ", emulated"
    tables = [
        f"Machine: {results['machine']['summary']}",
        f"Matrix multiply on {args.device}: fp32 {c['fp32_gflops']:.0f} GFLOP/s "
        f"({c['fp32_n']}^3), bf16 {c['bf16_gflops']:.1f} GFLOP/s ({c['bf16_n']}^3{emulated}), "
        f"{c['threads']} CPU threads",
    ]
    sizes = ["multi30k"] if args.quick else ["multi30k", "paper-base"]
    if "training" in parts:
        print("training ...", flush=True)
        seconds = args.seconds or (3.0 if args.quick else 20.0)
        tgt_tokens = args.tgt_tokens or (25_000 if gpu else 2000)
        rows = training_rows(sizes, seconds, c, device=args.device, tgt_tokens=tgt_tokens)
        results["training"] = rows
        tables.append(training_table(rows, results["machine"]))
    if "decoding" in parts:
        print("decoding ...", flush=True)
        results["decoding"] = decoding_rows(sizes, quick=args.quick, device=args.device)
        tables.append(decoding_table(results["decoding"]))
    if "attention" in parts and gpu:
        tables.append("Attention table left out: it studies the CPU's two attention paths.")
    elif "attention" in parts:
        print("attention ...", flush=True)
        dtypes = training_dtypes(c["native_bf16"])
        results["attention"] = run_all(args.quick, threads=None, dtypes=dtypes)
        tables.append(table(results["attention"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
