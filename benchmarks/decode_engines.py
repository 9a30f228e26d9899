"""One engine of the decoding race in its own process: decode the race's batches greedily and with
beam search, every output forced to the same number of tokens, timing each setting after one
warm-up batch (`benchmarks.decode_race` starts one process per engine and compares them).

    python -m benchmarks.decode_engines WORK ENGINE [--threads N] [--batch-sizes 32 1]
        [--device cuda]

Engines take token ids and return token ids: aiayn (`greedy_search`/`beam_search`, cached or
recomputing every prefix; cached also in int8 and bf16, `aiayn.model.precision`, and with the
step compiled, `aiayn.generate.compiled`, compiled in the warm-up), HF
`MarianMTModel.generate`, CTranslate2 `Translator.translate_batch` (token strings in and out,
mapped through the export's vocabulary). Every engine is told to produce exactly `out_len`
tokens (EOS suppressed before, decoding stopped at) and never to produce pad or BOS, as our
search never does. Prints one JSON list of rows as its last line.

Where the engines' searches differ (none changes greedy outputs):
- Length penalty: aiayn ranks finished hypotheses by log P / ((5 + |Y|) / 6)^alpha (GNMT), HF and
  CTranslate2 by log P / |Y|^alpha; with every output `out_len` long, no penalty changes which
  hypothesis wins. HF's default early-stopping heuristic and CTranslate2's patience stop rule
  differ from our exact bound, which equally matters only for outputs of different lengths.
- Suppressed tokens: aiayn and HF set them to -inf after the log-softmax, CTranslate2 before it,
  so its beam scores are renormalised over the allowed tokens (log P - sum log(1 - p(EOS, pad,
  BOS)); measured to 1e-6 on a tiny model). Hypotheses whose suppressed probability differs are
  ranked differently: a trained model forced past its EOS moves most.
- HF would force EOS as the last token (the export's `forced_eos_token_id`, as Marian's); our
  own GenerationConfig leaves it out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Decode = Callable[[list[list[int]], int], list[list[int]]]
"""(sources, beam size) -> one output per source, all as token ids."""

ENGINES = [
    "aiayn-cached",
    "aiayn-compiled",
    "aiayn-int8",
    "aiayn-bf16",
    "aiayn-uncached",
    "hf",
    "ct2-float32",
    "ct2-int8",
]
REDUCED_PRECISION = ("aiayn-int8", "aiayn-bf16", "ct2-int8")
"""Engines that change the model's numbers: their outputs may differ from the reference."""


def race_engines(native_bf16: bool, device: str = "cpu") -> list[str]:
    """Every engine, but aiayn-bf16 only where the device multiplies bf16 natively (elsewhere it
    would time the emulation, minutes per batch). On a GPU: no aiayn-int8 (torch's int8 kernels
    are the CPU's), no aiayn-compiled (not measured there yet), and CTranslate2 only where its
    CUDA build finds the GPU (`ct2_sees_gpu`)."""
    engines = [e for e in ENGINES if native_bf16 or e != "aiayn-bf16"]
    if device.startswith("cuda"):
        ct2 = ct2_sees_gpu()
        cpu_only = ("aiayn-int8", "aiayn-compiled")
        engines = [e for e in engines if e not in cpu_only and (ct2 or not e.startswith("ct2"))]
    return engines


def ct2_sees_gpu() -> bool:
    """CTranslate2 is installed and its CUDA build finds a GPU."""
    try:
        import ctranslate2
    except ImportError:
        return False
    return ctranslate2.get_cuda_device_count() > 0


RACE_FILE = "race.json"


@dataclass(frozen=True)
class Race:
    """What every engine decodes, written by the parent as `race.json` in the work folder."""

    sources: list[list[int]]  # source ids, each ending with EOS, no padding
    batches: dict[str, list[list[int]]]  # batch size -> batches of source indices
    out_len: int  # output tokens every engine must produce
    beam: int  # beam size of the beam-search settings
    alpha: float  # length penalty exponent passed to beam search
    pad_id: int
    bos_id: int
    eos_id: int

    @classmethod
    def read(cls, work: Path) -> Race:
        return cls(**json.loads((work / RACE_FILE).read_text()))


def padded(sources: list[list[int]], pad_id: int, device: str = "cpu"):
    """(batch, longest) tensor of `sources`, right-padded with `pad_id`, on `device`."""
    import torch

    src = torch.full((len(sources), max(map(len, sources))), pad_id, dtype=torch.long)
    for i, ids in enumerate(sources):
        src[i, : len(ids)] = torch.tensor(ids)
    return src.to(device)


def aiayn_decoder(
    work: Path,
    race: Race,
    *,
    use_cache: bool,
    precision: str = "fp32",
    device: str = "cpu",
    compiled: bool = False,
) -> Decode:
    from aiayn.generate.compiled import CompiledStep
    from aiayn.generate.options import DecodeOptions
    from aiayn.generate.search import beam_search, greedy_search
    from aiayn.model.precision import to_inference_precision
    from benchmarks.race_weights import load_aiayn

    model, n = to_inference_precision(load_aiayn(work).to(device), precision), race.out_len
    step = CompiledStep(model) if compiled else None

    def decode(sources: list[list[int]], beam: int) -> list[list[int]]:
        src = padded(sources, race.pad_id, device)
        options = DecodeOptions(beam=beam, alpha=race.alpha, max_len_a=0.0, max_len_b=n, min_len=n)
        if beam == 1:
            out = greedy_search(model, src, options=options, use_cache=use_cache, compiled=step)
            return out.tolist()
        hyps = beam_search(model, src, options=options, use_cache=use_cache, compiled=step)
        return [best[0].tokens for best in hyps]

    return decode


def hf_decoder(work: Path, race: Race, device: str = "cpu") -> Decode:
    import torch
    from transformers import GenerationConfig, MarianMTModel

    from benchmarks.race_weights import HF_DIR

    model = MarianMTModel.from_pretrained(work / HF_DIR).eval().to(device)
    ids = dict(pad_token_id=race.pad_id, bos_token_id=race.bos_id, eos_token_id=race.eos_id,
               decoder_start_token_id=race.bos_id, forced_eos_token_id=None)  # fmt: skip
    length = dict(max_new_tokens=race.out_len, min_new_tokens=race.out_len)
    configs = {
        1: GenerationConfig(**ids, **length, do_sample=False, num_beams=1, use_cache=True,
                            suppress_tokens=[race.pad_id, race.bos_id]),
        race.beam: GenerationConfig(**ids, **length, do_sample=False, num_beams=race.beam,
                                    length_penalty=race.alpha, early_stopping=False,
                                    use_cache=True, suppress_tokens=[race.pad_id, race.bos_id]),
    }  # fmt: skip

    @torch.no_grad()
    def decode(sources: list[list[int]], beam: int) -> list[list[int]]:
        src = padded(sources, race.pad_id, device)
        # A config object of our own, not merged with the model's defaults (which would force
        # EOS as the last token, as the exported config.json asks of transformers).
        model.generation_config = configs[beam]
        out = model.generate(input_ids=src, attention_mask=src != race.pad_id)
        return out[:, 1:].tolist()  # drop the decoder start token

    return decode


def ct2_decoder(work: Path, race: Race, engine: str, threads: int, device: str = "cpu") -> Decode:
    import ctranslate2

    from benchmarks.race_weights import HF_DIR, read_vocabulary

    translator = ctranslate2.Translator(
        str(work / engine), device=device.split(":")[0], device_index=_index(device),
        inter_threads=1, intra_threads=threads,
    )  # fmt: skip
    tokens = read_vocabulary(work / HF_DIR)
    token_id = {token: i for i, token in enumerate(tokens)}
    suppress = [[tokens[race.pad_id]], [tokens[race.bos_id]]]

    def decode(sources: list[list[int]], beam: int) -> list[list[int]]:
        results = translator.translate_batch(
            [[tokens[i] for i in ids] for ids in sources], beam_size=beam,
            length_penalty=race.alpha if beam > 1 else 1.0, max_decoding_length=race.out_len,
            min_decoding_length=race.out_len, suppress_sequences=suppress, max_input_length=0,
        )  # fmt: skip
        return [[token_id[t] for t in result.hypotheses[0]] for result in results]

    return decode


def _index(device: str) -> int:
    """The N of `cuda:N` (0 for `cuda` and `cpu`)."""
    return int(device.split(":")[1]) if ":" in device else 0


def build_decoder(work: Path, race: Race, engine: str, threads: int, device: str = "cpu") -> Decode:
    if engine in ("aiayn-int8", "aiayn-bf16"):
        precision = engine.removeprefix("aiayn-")
        return aiayn_decoder(work, race, use_cache=True, precision=precision, device=device)
    if engine == "aiayn-compiled":
        return aiayn_decoder(work, race, use_cache=True, device=device, compiled=True)
    if engine.startswith("aiayn"):
        return aiayn_decoder(work, race, use_cache=engine == "aiayn-cached", device=device)
    if engine == "hf":
        return hf_decoder(work, race, device)
    if engine.startswith("ct2"):
        return ct2_decoder(work, race, engine, threads, device)
    raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")


def run_setting(decode: Decode, race: Race, batch_size: str, beam: int) -> dict:
    """Decode every batch of one batch size once (after a warm-up batch) and time it."""
    batches = race.batches[batch_size]
    decode([race.sources[i] for i in batches[0]], beam)  # warm-up
    outputs: dict[int, list[int]] = {}
    start = time.perf_counter()
    for batch in batches:
        for i, out in zip(batch, decode([race.sources[i] for i in batch], beam), strict=True):
            outputs[i] = out
    seconds = time.perf_counter() - start
    index = sorted(outputs)
    tokens = [outputs[i] for i in index]
    lengths = [len(out) for out in tokens]
    return {
        "search": "greedy" if beam == 1 else f"beam {beam}",
        "batch_size": int(batch_size),
        "sentences": len(index),
        "seconds": seconds,
        "sentences_per_s": len(index) / seconds,
        "tgt_tokens_per_s": sum(lengths) / seconds,
        "out_len_min": min(lengths),
        "out_len_max": max(lengths),
        "sha256": hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:16],
        "index": index,
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="work folder written by benchmarks.decode_race")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-sizes", nargs="+", default=["32", "1"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    if not args.engine.startswith("ct2"):
        import torch

        torch.set_num_threads(args.threads)
    race = Race.read(args.work)
    decode = build_decoder(args.work, race, args.engine, args.threads, args.device)
    rows = []
    for batch_size in args.batch_sizes:
        for beam in (1, race.beam):
            row = run_setting(decode, race, batch_size, beam)
            rows.append({"engine": args.engine, "threads": args.threads, "device": args.device,
                         **row})  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
