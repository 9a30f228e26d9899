"""Data-side speed on Multi30k de-en train: tokenizer training time (joint BPE, 8000 pieces),
encoding rate, and sentence pairs per second through `TokenBatchSampler` + `collate`.

    python -m benchmarks.batching [--data-dir DIR] [--seconds 3]

Prints one line per figure, then all figures as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from aiayn.data.batching import TokenBatchSampler, example_lengths, iterate_batches
from aiayn.data.corpus import multi30k_files, read_parallel
from aiayn.data.prepare import DEFAULT_VOCAB_SIZE
from aiayn.data.tokenizer import Tokenizer


def time_tokenizer(sentences: list[str], repeats: int) -> tuple[Tokenizer, float]:
    """Median seconds of training the default joint tokenizer, and the tokenizer."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokenizer = Tokenizer.train(sentences, vocab_size=DEFAULT_VOCAB_SIZE)
        times.append(time.perf_counter() - start)
    return tokenizer, statistics.median(times)


def pairs_per_second(
    pairs_ids: list[tuple[list[int], list[int]]], max_tokens: int, seconds: float
) -> float:
    """Sentence pairs batched per second (sampler + collate), over whole epochs."""
    sampler = TokenBatchSampler(example_lengths(pairs_ids), max_tokens, seed=0)
    n_pairs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n_pairs += sum(len(batch.index) for batch in iterate_batches(pairs_ids, sampler))
    return n_pairs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data root (default: $AIAYN_DATA or the cache)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per batching figure")
    parser.add_argument("--repeats", type=int, default=3, help="tokenizer trainings to time")
    args = parser.parse_args()
    files = [multi30k_files("train", lang, args.data_dir) for lang in ("de", "en")]
    pairs = read_parallel(*files)
    sentences = [s for s, _ in pairs] + [t for _, t in pairs]
    tokenizer, train_s = time_tokenizer(sentences, args.repeats)
    start = time.perf_counter()
    ids = tokenizer.encode_batch(sentences)
    encode_rate = len(sentences) / (time.perf_counter() - start)
    pairs_ids = list(zip(ids[: len(pairs)], ids[len(pairs) :], strict=True))
    figures = {
        "tokenizer_train_s": round(train_s, 3),
        "encode_sentences_per_s": round(encode_rate),
    }
    what = f"BPE {DEFAULT_VOCAB_SIZE}, {len(sentences)} sentences"
    print(f"tokenizer training ({what}): {train_s:.2f} s (median of {args.repeats})")
    print(f"encoding: {encode_rate:,.0f} sentences/s")
    for max_tokens in (4096, 25000):
        rate = pairs_per_second(pairs_ids, max_tokens, args.seconds)
        figures[f"batching_pairs_per_s_{max_tokens}"] = round(rate)
        print(f"sampler + collate, max_tokens {max_tokens}: {rate:,.0f} sentence pairs/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
