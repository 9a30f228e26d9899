"""The machine's matrix-multiply ceilings (GFLOP/s, fp32 and bf16): the denominators of MFU.
On a CPU without native bf16 the bf16 figure comes from 512^3 products (a 2048^3 one would take
~20 s each there) and is marked emulated.

Run alone: `python -m benchmarks.ceilings` prints JSON.
"""

from __future__ import annotations

import json
import time

import torch

from aiayn.machine import describe_machine


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Best sustained rate of an n x n x n matrix multiply over a few repeats."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):  # warm-up: thread pool, caches, packing
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * n**3 / elapsed / 1e9)
    return best


def measure() -> dict[str, float | int | bool]:
    native = describe_machine("cpu").native_bf16
    bf16_n = 2048 if native else 512
    return {
        "fp32_gflops": matmul_gflops(torch.float32),
        "bf16_gflops": matmul_gflops(torch.bfloat16, n=bf16_n),
        "bf16_n": bf16_n,
        "native_bf16": native,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(measure()))
