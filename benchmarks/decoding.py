"""Decoding speed: sentences per second of greedy and beam search on a test set, decoding on the
key/value cache against recomputing every prefix at every step, measured through
`aiayn.load(RUN_DIR).translate` (tokenising, batching, detokenising included).

    python -m benchmarks.decoding RUN_DIR [--split SPLIT] [--beams 1 4] [--limit N]
        [--threads N] [--max-tokens 6000] [--checkpoint best] [--device cpu]

Prints a Markdown table, then the figures as one JSON line. Each setting decodes the same
sentences once, after a warm-up; on a shared CPU, compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import time

import sacrebleu
import torch

import aiayn
from aiayn.data.splits import TEST_SPLIT, read_split
from benchmarks.harness import machine as harness_machine


def test_set(model: aiayn.TextModel, split: str | None) -> tuple[list[str], list[str]]:
    """(sources, references) of a split of the run's data set (aiayn.data.splits)."""
    data = model.config.data
    split = split or TEST_SPLIT[data.dataset]
    pairs = read_split(
        data.dataset, split, src=data.src, tgt=data.tgt, data_dir=data.data_dir,
        train_files=data.train_files, valid_files=data.valid_files,
    )  # fmt: skip
    return [source for source, _ in pairs], [target for _, target in pairs]


def measure(
    model: aiayn.TextModel, sources: list[str], *, beam: int, use_cache: bool, max_tokens: int
) -> tuple[dict, list[str]]:
    start = time.perf_counter()
    outputs = model.translate(sources, beam=beam, use_cache=use_cache, max_tokens=max_tokens)
    seconds = time.perf_counter() - start
    out_tokens = sum(len(ids) + 1 for ids in model.tokenizer.encode_batch(outputs))
    row = {
        "beam": beam,
        "cache": use_cache,
        "sentences": len(sources),
        "seconds": seconds,
        "sentences_per_s": len(sources) / seconds,
        "output_tokens_per_s": out_tokens / seconds,
    }
    return row, outputs


def table(rows: list[dict]) -> str:
    lines = [
        "| search | cache | sentences | seconds | sentences/s | output tokens/s | BLEU | "
        "cache speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        uncached = next(
            (u for u in rows if u["beam"] == r["beam"] and not u["cache"]), None
        )  # fmt: skip
        speedup = (
            f"{r['sentences_per_s'] / uncached['sentences_per_s']:.2f}x"
            if r["cache"] and uncached
            else ""
        )
        lines.append(
            f"| {search} | {'yes' if r['cache'] else 'no'} | {r['sentences']} | "
            f"{r['seconds']:.1f} | {r['sentences_per_s']:.1f} | "
            f"{r['output_tokens_per_s']:.0f} | {r['bleu']:.2f} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", help="default: test2016 (Multi30k), else the valid files")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--limit", type=int, help="first N sentences only")
    parser.add_argument("--no-uncached", action="store_true", help="skip the uncached runs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--max-tokens", type=int, default=aiayn.translate.DEFAULT_MAX_TOKENS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = aiayn.load(args.run_dir, args.checkpoint, device=args.device)
    sources, references = test_set(model, args.split)
    sources, references = sources[: args.limit], references[: args.limit]
    model.translate(sources[:32], beam=max(args.beams))  # warm-up
    rows = []
    for beam in args.beams:
        outputs = {}
        for use_cache in (True,) if args.no_uncached else (True, False):
            row, outputs[use_cache] = measure(
                model, sources, beam=beam, use_cache=use_cache, max_tokens=args.max_tokens
            )
            row["bleu"] = sacrebleu.corpus_bleu(outputs[use_cache], [references]).score
            rows.append(row)
            print(
                f"  beam {beam} cache {use_cache}: {row['sentences_per_s']:.1f} sent/s", flush=True
            )
        if len(outputs) == 2:
            same = sum(a == b for a, b in zip(outputs[True], outputs[False], strict=True))
            rows[-1]["identical_to_cached"] = same / len(sources)
    machine = {
        **harness_machine(args.device),
        "run_dir": str(args.run_dir),
        "checkpoint": args.checkpoint,
        "split": args.split,
        "max_tokens": args.max_tokens,
        "parameters": sum(p.numel() for p in model.model.parameters()),
    }
    print(table(rows))
    for r in rows:
        if "identical_to_cached" in r:
            print(f"beam {r['beam']}: uncached output equals cached on "
                  f"{r['identical_to_cached']:.1%} of sentences")  # fmt: skip
    print(json.dumps({"machine": machine, "decoding": rows}))


if __name__ == "__main__":
    main()
