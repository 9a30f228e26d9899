"""The decoding race (issue #6): aiayn (cached, and uncached as the reference) against HF
`generate` and CTranslate2 (float32, int8) on the same weights and the same source batches,
greedy and beam 4, batch 32 (throughput) and batch 1 (latency), every output forced to the same
length. Each engine runs in its own process (`benchmarks.decode_engines`): CTranslate2's OpenMP
threads keep spinning after it returns and would slow torch in the same process.

    python -m benchmarks.decode_race [--quick] [--size multi30k|paper-base] [--run-dir RUN]
        [--threads N] [--device cuda] [--out benchmarks/decode_race.json]

Prints a Markdown table (sentences/s, target tokens/s, ratios to CTranslate2 int8 and to HF,
whether each engine's tokens equal the uncached reference) and writes the rows as JSON.
Random-init models collapse onto repeating one token, so their token comparison is weak; with
`--run-dir` the weights are a trained run's best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from aiayn.machine import describe_machine
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import Transformer
from benchmarks.decode_engines import ENGINES, RACE_FILE, REDUCED_PRECISION, race_engines
from benchmarks.engines import SIZES
from benchmarks.harness import child, machine
from benchmarks.race_weights import random_model, write_weights

REFERENCE = "aiayn-uncached"
CT2_BEAM = (
    "; CTranslate2 renormalises log-probs over the tokens it may produce (EOS before the "
    "forced length, pad, BOS), aiayn and HF do not (see benchmarks/decode_engines.py)"
)


@dataclass(frozen=True)
class RaceSettings:
    """What the race decodes and how."""

    sentences: int = 500
    """Sources decoded in batches of `batch_size` (throughput)."""
    latency_sentences: int = 50
    """The first this many sources are also decoded one at a time (latency)."""
    batch_size: int = 32
    out_len: int = 20
    """Output tokens every engine produces for every source (min = max length)."""
    beam: int = 4
    alpha: float = 0.6
    """Length penalty exponent (GNMT's for aiayn, length**alpha for HF and CTranslate2); with
    every output of length `out_len` it cannot change which hypothesis wins."""
    threads: int = len(os.sched_getaffinity(0))
    seed: int = 0


QUICK = RaceSettings(sentences=64, latency_sentences=8)


def multi30k_like_sources(n: int, config: ModelConfig, *, seed: int) -> list[list[int]]:
    """`n` random sources with Multi30k-like lengths (de subwords: mean ~15, sd ~5, at most
    60 and what the model's positions allow), ids from 4 (after pad, unk, bos and eos), each
    ending with EOS."""
    g = torch.Generator().manual_seed(seed)
    longest = min(60, config.max_len - 1)
    lengths = (torch.randn(n, generator=g) * 5 + 15).round().clamp(3, longest).long().tolist()
    return [
        torch.randint(4, config.vocab_size, (k,), generator=g).tolist() + [config.eos_id]
        for k in lengths
    ]


def write_race(work: Path, model: Transformer, settings: RaceSettings) -> None:
    """`race.json`: the sources, their batches (length-sorted for throughput, as a translator
    batches them; one by one for latency) and the decoding settings."""
    config = model.config
    if not 1 <= settings.out_len < config.max_len:
        raise ValueError(f"out_len {settings.out_len} must be in [1, {config.max_len}) "
                         f"(the model has {config.max_len} positions)")  # fmt: skip
    sources = multi30k_like_sources(settings.sentences, config, seed=settings.seed)
    by_length = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    k = settings.batch_size
    batches = {
        str(k): [by_length[i : i + k] for i in range(0, len(by_length), k)],
        "1": [[i] for i in range(min(settings.latency_sentences, len(sources)))],
    }
    race = dict(sources=sources, batches=batches, out_len=settings.out_len, beam=settings.beam,
                alpha=settings.alpha, pad_id=config.pad_id, bos_id=config.bos_id,
                eos_id=config.eos_id)  # fmt: skip
    (work / RACE_FILE).write_text(json.dumps(race))


def run_engine(
    work: Path, engine: str, threads: int, batch_sizes: list[str], device: str = "cpu"
) -> list[dict]:
    """Run one engine in a child process; its rows (with output tokens)."""
    args = [str(work), engine, "--threads", str(threads), "--device", device, "--batch-sizes",
            *batch_sizes]  # fmt: skip
    return child("benchmarks.decode_engines", *args, threads=threads)


def compare_to_reference(rows: list[dict]) -> None:
    """Add to each row how many of its outputs equal the uncached reference's (same search),
    and the first sentence and token position where they differ."""
    for row in rows:
        ref = next(r for r in rows if r["engine"] == REFERENCE and r["search"] == row["search"])
        expected = dict(zip(ref["index"], ref["tokens"], strict=True))
        same = [out == expected[i] for i, out in zip(row["index"], row["tokens"], strict=True)]
        row["same_as_reference"] = sum(same)
        row["first_difference"] = None
        if not all(same):
            i, out = row["index"][same.index(False)], row["tokens"][same.index(False)]
            row["first_difference"] = {
                "sentence": i,
                "position": first_difference(out, expected[i]),
            }
        row["distinct_tokens"] = len({t for out in row["tokens"] for t in out})


def first_difference(a: list[int], b: list[int]) -> int:
    """The first position where two token lists differ (the shorter one's length if one is a
    prefix of the other)."""
    return next(
        (t for t, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def race(
    model: Transformer,
    settings: RaceSettings,
    work: Path,
    *,
    tokenizer_model: bytes | None = None,
    engines: list[str] | None = None,
    device: str = "cpu",
) -> list[dict]:
    """Write `model` in every engine's format to `work`, run every engine in its own process on
    the same batches on `device` and compare outputs. The reference runs batch `batch_size`
    only. `engines` defaults to `race_engines` on this machine's `device`.

    Returns:
        One row per engine, search and batch size, without output tokens.
    """
    if engines is None:
        engines = race_engines(describe_machine(device).native_bf16, device)
    ct2 = any(e.startswith("ct2") for e in engines)
    write_weights(model, work, tokenizer_model=tokenizer_model, ct2=ct2)
    write_race(work, model, settings)
    rows = []
    for engine in [REFERENCE, *(e for e in engines if e != REFERENCE)]:
        sizes = [str(settings.batch_size)] + (["1"] if engine != REFERENCE else [])
        rows += run_engine(work, engine, settings.threads, sizes, device)
        print(f"  {engine}: done", file=sys.stderr, flush=True)
    compare_to_reference(rows)
    for row in rows:
        del row["index"], row["tokens"]
        row["settings"] = asdict(settings)
    return rows


def decoding_rows(
    sizes: list[str],
    *,
    quick: bool,
    threads: int | None = None,
    run_dir: str | None = None,
    settings: RaceSettings | None = None,
    device: str = "cpu",
) -> list[dict]:
    """The race for each named size of `benchmarks.engines.SIZES` (random init, fixed seed), or
    for a trained run's best checkpoint; rows carry their `size` (the run folder's name for a
    run, so that no path of this machine lands in a table).
    `settings` replaces the full or `quick` ones."""
    settings = settings or (QUICK if quick else RaceSettings())
    settings = replace(settings, threads=threads) if threads else settings
    rows = []
    for name in [run_dir] if run_dir else sizes:
        model, tokenizer_model = load_weights(name, settings.seed, from_run=bool(run_dir))
        with tempfile.TemporaryDirectory(prefix="decode-race-") as work:
            rows_of_size = race(model, settings, Path(work), tokenizer_model=tokenizer_model,
                                device=device)  # fmt: skip
            for row in rows_of_size:
                rows.append({"size": Path(name).name if run_dir else name, **row})
    return rows


def load_weights(name: str, seed: int, *, from_run: bool) -> tuple[Transformer, bytes | None]:
    """A run's best checkpoint and its tokenizer, or a random-init model of size `name`."""
    if not from_run:
        return random_model(SIZES[name], seed), None
    from aiayn.data.tokenizer import TOKENIZER_FILE
    from aiayn.train.checkpoint import load_model

    model, _ = load_model(name, "best")
    return model, (Path(name) / TOKENIZER_FILE).read_bytes()


def decoding_table(rows: list[dict]) -> str:
    """Markdown: one line per size, batch size, search and engine, with ratios to CTranslate2
    int8 and to HF on the same setting, and notes on output lengths and differences."""
    lines = [
        "| size | batch | search | engine | sentences/s | target tok/s | vs CT2 int8 | vs HF "
        "| output length | same tokens as uncached |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=_table_order):
        setting = [a for a in rows if _setting(a) == _setting(r)]
        ratios = []
        for anchor in ("ct2-int8", "hf"):
            base = next((a for a in setting if a["engine"] == anchor), None)
            ratios.append(f"{r['sentences_per_s'] / base['sentences_per_s']:.2f}x" if base else "")
        length = f"{r['out_len_min']}" + (
            "" if r["out_len_min"] == r["out_len_max"] else f"-{r['out_len_max']}"
        )
        same = "reference" if r["engine"] == REFERENCE else (
            f"{r['same_as_reference']}/{r['sentences']}"
        )  # fmt: skip
        lines.append(
            f"| {r['size']} | {r['batch_size']} | {r['search']} | {r['engine']} | "
            f"{r['sentences_per_s']:,.1f} | {r['tgt_tokens_per_s']:,.0f} | {ratios[0]} | "
            f"{ratios[1]} | {length} | {same} |"
        )
    return "\n".join(lines + [""] + decoding_notes(rows))


def _setting(row: dict) -> tuple:
    return row["size"], row["batch_size"], row["search"]


def _table_order(row: dict) -> tuple:
    beam = 1 if row["search"] == "greedy" else int(row["search"].split()[-1])
    return row["size"], -row["batch_size"], beam, ENGINES.index(row["engine"])


def decoding_notes(rows: list[dict]) -> list[str]:
    """Lines on forced output lengths, on fp32 engines whose tokens differ from the reference,
    and on the engines left out."""
    out_len = rows[0]["settings"]["out_len"]
    wrong = [f"{r['engine']} ({r['search']}, batch {r['batch_size']})" for r in rows
             if not r["out_len_min"] == r["out_len_max"] == out_len]  # fmt: skip
    notes = [
        f"- Output length forced to {out_len} tokens: "
        + ("every engine produced exactly that." if not wrong else "NOT met by " + ", ".join(wrong))
    ]
    for r in rows:
        if r["engine"] not in REDUCED_PRECISION and r["first_difference"] is not None:
            d = r["first_difference"]
            why = CT2_BEAM if r["engine"] == "ct2-float32" and r["search"] != "greedy" else ""
            notes.append(
                f"- {r['size']} {r['engine']} {r['search']} batch {r['batch_size']}: "
                f"{r['sentences'] - r['same_as_reference']} outputs differ from the reference "
                f"(first: sentence {d['sentence']}, token {d['position']}){why}."
            )
    raced = {r["engine"] for r in rows}
    gpu = rows[0].get("device", "cpu").startswith("cuda")
    if "aiayn-bf16" not in raced:
        notes.append("- aiayn-bf16 not raced: this device has no native bf16 (it would time "
                     "the emulation).")  # fmt: skip
    if gpu and "aiayn-int8" not in raced:
        notes.append("- aiayn-int8 not raced: torch's int8 kernels are the CPU's.")
    if gpu and not raced & {"ct2-float32", "ct2-int8"}:
        notes.append("- CTranslate2 not raced: no CUDA build of it that finds this GPU is "
                     "installed here.")  # fmt: skip
    distinct = min(r["distinct_tokens"] for r in rows if r["engine"] == REFERENCE)
    notes.append(f"- The reference outputs use at least {distinct} distinct tokens per setting.")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 sentences, 8 for latency")
    parser.add_argument("--size", choices=sorted(SIZES), default="multi30k")
    parser.add_argument("--run-dir", help="race a trained run's best checkpoint instead")
    parser.add_argument("--threads", type=int, help="threads per engine (default: all cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/decode_race.json"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    rows = decoding_rows([args.size], quick=args.quick, threads=args.threads,
                         run_dir=args.run_dir, device=args.device)  # fmt: skip
    write_results(args.out, rows, args.device)
    print(decoding_table(rows))


def write_results(out: Path, rows: list[dict], device: str = "cpu") -> None:
    """The rows and the machine they ran on, as JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(device), "decoding": rows}, indent=2))


if __name__ == "__main__":
    main()
