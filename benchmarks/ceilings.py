"""The machine's matrix-multiply ceilings (GFLOP/s, fp32 and bf16): the denominators of MFU.
On a CPU without native bf16 the bf16 figure comes from 512^3 products (a 2048^3 one would take
~20 s each there) and is marked emulated.

On a GPU (`--device cuda`) both come from 8192^3 products, fp32 without TF32 (torch's default,
which training keeps).

Run alone: `python -m benchmarks.ceilings [--device cuda]` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aiayn.machine import describe_machine


def matmul_gflops(
    dtype: torch.dtype, n: int = 2048, seconds: float = 2.0, device: str = "cpu"
) -> float:
    """Best sustained rate of an n x n x n matrix multiply over a few repeats."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync() -> None:
        if a.is_cuda:
            torch.cuda.synchronize(a.device)

    for _ in range(3):  # warm-up: thread pool, caches, packing
        a @ b
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * n**3 / elapsed / 1e9)
    return best


def measure(device: str = "cpu") -> dict[str, float | int | bool | str]:
    native = describe_machine(device).native_bf16
    gpu = torch.device(device).type == "cuda"
    fp32_n, bf16_n = (8192, 8192) if gpu else (2048, 2048 if native else 512)
    return {
        "device": device,
        "fp32_gflops": matmul_gflops(torch.float32, n=fp32_n, device=device),
        "bf16_gflops": matmul_gflops(torch.bfloat16, n=bf16_n, device=device),
        "fp32_n": fp32_n,
        "bf16_n": bf16_n,
        "native_bf16": native,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    print(json.dumps(measure(parser.parse_args().device)))
