"""Where decoding time goes: torch's profiler over `translate` of a trained run's test sentences,
or over the decoding race's setting (random weights of a size, one batch of random sources,
output forced to 20 tokens), operators by their own time as a share of the wall time (what no
operator accounts for is Python between kernels).

    python -m benchmarks.profile_decoding RUN_DIR [--checkpoint averaged] [--precision int8]
        [--beam 4] [--sentences 320] [--top 12]
    python -m benchmarks.profile_decoding --size paper-base [--precision int8] [--beam 4]
        [--sentences 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

import aiayn
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import beam_search, greedy_search
from aiayn.model.precision import INFERENCE_PRECISIONS, to_inference_precision
from benchmarks.decode_engines import padded
from benchmarks.decode_race import RaceSettings, multi30k_like_sources
from benchmarks.decoding import test_set
from benchmarks.engines import SIZES
from benchmarks.race_weights import random_model

Rows = tuple[float, float, list[tuple[str, float, int]]]


def profile_rows(
    run_dir: str, *, checkpoint: str, precision: str, beam: int, sentences: int
) -> Rows:
    """(sentences/s unprofiled, profiled wall seconds, [(operator, share of wall, calls)])."""
    model = aiayn.load(run_dir, checkpoint, precision=precision)
    sources = test_set(model, None)[0][:sentences]
    model.translate(sources[:32], beam=beam)  # warm-up
    return _profile(lambda: model.translate(sources, beam=beam), len(sources))


def profile_race_rows(
    size: str, *, precision: str, beam: int, sentences: int, out_len: int = 20, seed: int = 0
) -> Rows:
    """`profile_rows` for one batch of the race's random sources (`multi30k_like_sources`) on
    random weights of `size`, every output forced to `out_len` tokens as in the race."""
    model = to_inference_precision(random_model(SIZES[size], seed), precision)
    src = padded(multi30k_like_sources(sentences, model.config, seed=seed), model.config.pad_id)
    options = DecodeOptions(
        beam=beam, alpha=RaceSettings.alpha, max_len_a=0.0, max_len_b=out_len, min_len=out_len
    )
    search = greedy_search if beam == 1 else beam_search

    def decode() -> object:
        return search(model, src, options=options)

    decode()  # warm-up
    return _profile(decode, sentences)


def _profile(decode: Callable[[], object], sentences: int) -> Rows:
    start = time.perf_counter()
    decode()
    speed = sentences / (time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        decode()
        wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return speed, wall, [(e.key, e.self_cpu_time_total / 1e6 / wall, e.count) for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a trained run (or --size)")
    parser.add_argument("--size", choices=sorted(SIZES), help="random weights, the race's way")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--sentences", type=int, help="default: 320 of test, or a batch of 32")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    if (args.run_dir is None) == (args.size is None):
        parser.error("give either RUN_DIR or --size")
    if args.size:
        speed, wall, rows = profile_race_rows(
            args.size, precision=args.precision, beam=args.beam, sentences=args.sentences or 32
        )
    else:
        speed, wall, rows = profile_rows(
            args.run_dir, checkpoint=args.checkpoint, precision=args.precision, beam=args.beam,
            sentences=args.sentences or 320,
        )  # fmt: skip
    print(f"{args.precision}, beam {args.beam}: {speed:.1f} sentences/s unprofiled; "
          f"profiled {wall:.2f} s")  # fmt: skip
    print("| operator | share of wall time | calls |\n|---|---:|---:|")
    for name, share, calls in rows[: args.top]:
        print(f"| {name} | {share:.1%} | {calls} |")
    print(f"| (no operator: Python) | {1 - sum(share for _, share, _ in rows):.1%} | |")


if __name__ == "__main__":
    main()
