"""Where decoding time goes: torch's profiler over `translate` of a trained run's test sentences,
operators by their own time as a share of the wall time (what no operator accounts for is
Python between kernels).

    python -m benchmarks.profile_decoding RUN_DIR [--checkpoint averaged] [--precision int8]
        [--beam 4] [--sentences 320] [--top 12]
"""

from __future__ import annotations

import argparse
import time

from torch.profiler import ProfilerActivity, profile

import aiayn
from aiayn.model.precision import INFERENCE_PRECISIONS
from benchmarks.decoding import test_set


def profile_rows(
    run_dir: str, *, checkpoint: str, precision: str, beam: int, sentences: int
) -> tuple[float, float, list[tuple[str, float, int]]]:
    """(sentences/s unprofiled, profiled wall seconds, [(operator, share of wall, calls)])."""
    model = aiayn.load(run_dir, checkpoint, precision=precision)
    sources = test_set(model, None)[0][:sentences]
    model.translate(sources[:32], beam=beam)  # warm-up
    start = time.perf_counter()
    model.translate(sources, beam=beam)
    speed = len(sources) / (time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        model.translate(sources, beam=beam)
        wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return speed, wall, [(e.key, e.self_cpu_time_total / 1e6 / wall, e.count) for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    speed, wall, rows = profile_rows(
        args.run_dir, checkpoint=args.checkpoint, precision=args.precision, beam=args.beam,
        sentences=args.sentences,
    )  # fmt: skip
    print(f"{args.precision}, beam {args.beam}: {speed:.1f} sentences/s unprofiled; "
          f"profiled {wall:.2f} s")  # fmt: skip
    print("| operator | share of wall time | calls |\n|---|---:|---:|")
    for name, share, calls in rows[: args.top]:
        print(f"| {name} | {share:.1%} | {calls} |")
    print(f"| (no operator: Python) | {1 - sum(share for _, share, _ in rows):.1%} | |")


if __name__ == "__main__":
    main()
