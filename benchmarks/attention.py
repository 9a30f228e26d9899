"""Attention scaling: time and peak memory of forward + backward against sequence length for
aiayn's two attention paths (the formula of Eq. 1 and the fused SDPA kernel), fp32 and bf16.

    python -m benchmarks.attention [--quick]          # a table; one child process per point
    python -m benchmarks.attention --point formula bf16 128   # one point, JSON
    python -m benchmarks.attention --decode-step      # one query per row, inference (decoding)

Also the evidence for `aiayn.model.attention.fused_is_faster`: on a CPU with native bf16, in
bf16, the fused kernel is the slower path at the short lengths translation trains on; on a CPU
without native bf16 only fp32 is measured (`--point formula bf16 128` measures one bf16 point).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn.machine import describe_machine
from aiayn.model.attention import attention
from aiayn.model.masks import causal_mask
from benchmarks.harness import child, peak_rss_mb

LENGTHS = [16, 64, 128, 256, 512, 1024, 2048, 4096]
TOKENS = 8192  # batch * length held constant, so short sequences are not all overhead


def measure(path: str, dtype: str, length: int, heads: int = 8, d_head: int = 64) -> dict:
    torch.manual_seed(0)
    batch = max(1, TOKENS // length)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    q, k, v = (
        torch.randn(batch, heads, length, d_head, dtype=kind, requires_grad=True) for _ in range(3)
    )
    mask = causal_mask(length)

    def step() -> None:
        if path == "fused":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out, _ = attention(q, k, v, mask, need_weights=True)
        out.float().sum().backward()

    before = peak_rss_mb()
    step()  # warm-up
    repeats, start = 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - start < 1.0:
        step()
        repeats += 1
    seconds = (time.perf_counter() - start) / repeats
    return {
        "path": path,
        "dtype": dtype,
        "length": length,
        "batch": batch,
        "ms": seconds * 1000,
        "peak_mb": peak_rss_mb() - before,
    }


def measure_decode_step(
    dtype: str, rows: int, keys: int, heads: int = 4, d_head: int = 64
) -> dict[str, float]:
    """Microseconds per call of each path for one decoding step: one query per row over `keys`
    cached keys, no mask (a cached self-attention step), no autograd."""
    torch.manual_seed(0)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    q = torch.randn(rows, heads, 1, d_head, dtype=kind)
    k, v = (torch.randn(rows, heads, keys, d_head, dtype=kind) for _ in range(2))

    def formula() -> Tensor:
        return attention(q, k, v, need_weights=True)[0]

    def fused() -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    times = {}
    with torch.inference_mode():
        torch.testing.assert_close(formula(), fused(), atol=2e-2, rtol=2e-2)
        for _ in range(2):  # alternate, so that drift of the machine hits both paths
            for name, path in (("formula", formula), ("fused", fused)):
                repeats, start = 0, time.perf_counter()
                while repeats < 20 or time.perf_counter() - start < 0.2:
                    path()
                    repeats += 1
                seconds = (time.perf_counter() - start) / repeats
                times[name] = min(times.get(name, math.inf), seconds * 1e6)
    return times


def decode_step_table(dtypes: tuple[str, ...]) -> str:
    lines = ["| dtype | rows | keys | formula us | fused us | fused / formula |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for dtype in dtypes:
        for rows in (1, 4, 8, 16, 32, 64, 128):
            for keys in (10, 20, 40):
                t = measure_decode_step(dtype, rows, keys)
                ratio = t["fused"] / t["formula"]
                lines.append(
                    f"| {dtype} | {rows} | {keys} | {t['formula']:.1f} | {t['fused']:.1f} "
                    f"| {ratio:.2f} |"
                )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [
        "| length | batch | formula fp32 ms | fused fp32 ms | formula bf16 ms | fused bf16 ms "
        "| formula fp32 MB | fused fp32 MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["path"], r["dtype"], r["length"]): r for r in rows}
    for n in sorted({r["length"] for r in rows}):
        columns = [("formula", "fp32"), ("fused", "fp32"), ("formula", "bf16"), ("fused", "bf16")]
        cells = [by.get((path, dtype, n)) for path, dtype in columns]
        times = [f"{c['ms']:.1f}" if c else "-" for c in cells]
        mems = [f"{c['peak_mb']:.0f}" if c else "-" for c in cells[:2]]
        batch = next(c["batch"] for c in cells if c)
        lines.append(f"| {n} | {batch} | " + " | ".join(times + mems) + " |")
    return "\n".join(lines)


def run_all(
    quick: bool, threads: int | None, dtypes: tuple[str, ...] = ("fp32", "bf16")
) -> list[dict]:
    lengths = [16, 128, 1024] if quick else LENGTHS
    rows = []
    for length in lengths:
        for dtype in dtypes:
            for path in ("formula", "fused"):
                args = ["--point", path, dtype, str(length)]
                args += ["--threads", str(threads)] if threads else []
                rows.append(child("benchmarks.attention", *args))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--point", nargs=3, metavar=("PATH", "DTYPE", "LENGTH"))
    parser.add_argument("--decode-step", action="store_true", help="one query per row, no grad")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decode_step:
        machine = describe_machine("cpu")
        print(machine.summary())
        print(decode_step_table(("fp32", "bf16") if machine.native_bf16 else ("fp32",)))
        return
    if args.point:
        path, dtype, length = args.point
        print(json.dumps(measure(path, dtype, int(length))))
        return
    native = describe_machine("cpu").native_bf16
    rows = run_all(args.quick, args.threads, ("fp32", "bf16") if native else ("fp32",))
    print(json.dumps(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
