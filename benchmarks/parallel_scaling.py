"""Data parallelism on one machine: training tokens/s and memory per process for one process,
and for two processes under DDP and under FSDP (`aiayn.train.parallel`, as `aiayn train` wraps
the model), with and without activation checkpointing.

    python -m benchmarks.parallel_scaling [--models paper-big gpt2-small] [--tokens 1024]
        [--updates 4] [--out docs/parallel_scaling.json]

Every process trains on its own random batches of `--tokens` target tokens (sentences of 32
tokens; translation batches have as many source tokens) for 1 warm-up and `--updates` timed
updates: forward, label-smoothed loss, backward, gradient averaging, fp32 Adam. One process
gets all cores; two processes one core's share each (as `aiayn train` under torchrun sets
them). Weak scaling: each process keeps its batch, so two processes do twice the work per
update; efficiency = tokens/s of two processes / (2 x tokens/s of one process on one core).

Memory per process is read from /proc: `peak` (VmHWM, the highest resident set: under FSDP
that is the whole model built once before it is sharded) and `after` (RssAnon after the last
update: weights, gradients and Adam's moments as training holds them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, machine

SENTENCE = 32


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(
    model_name: str, strategy: str, tokens: int, updates: int, recompute: bool, out: Path
) -> None:
    """One process of a run (under torchrun, or alone): writes its figures to `out/<rank>.json`
    (a file per rank: ranks printing to one shared pipe can interleave their lines)."""
    import torch

    from aiayn.model.config import ModelConfig
    from aiayn.model.transformer import build_model
    from aiayn.train.distributed import setup_distributed, teardown_distributed
    from aiayn.train.loss import label_smoothed_cross_entropy
    from aiayn.train.parallel import (
        checkpoint_activations,
        local_parameters,
        shard,
        wrap_ddp,
    )

    ctx = setup_distributed("cpu")
    config = ModelConfig.preset(model_name, dropout=0.1)
    torch.manual_seed(0)
    model = build_model(config).train()
    if recompute:
        checkpoint_activations(model)
    forward = model
    if ctx.distributed:
        forward = shard(model, ctx) if strategy == "fsdp" else wrap_ddp(model, ctx)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)
    g = torch.Generator().manual_seed(1 + ctx.rank)
    rows = max(1, tokens // SENTENCE)

    def update() -> None:
        ids = torch.randint(4, config.vocab_size, (rows, SENTENCE + 1), generator=g)
        valid = torch.ones(rows, SENTENCE, dtype=torch.bool)
        if config.kind == "encoder-decoder":
            src = torch.randint(4, config.vocab_size, (rows, SENTENCE), generator=g)
            logits = forward(src, ids[:, :-1], valid, valid)
        else:
            logits = forward(ids[:, :-1], valid)
        loss = label_smoothed_cross_entropy(logits, ids[:, 1:], epsilon=0.1, ignore_index=0)
        (loss.loss / loss.n_tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    update()  # warm-up: allocations, Adam's state
    start = time.perf_counter()
    for _ in range(updates):
        update()
    seconds = time.perf_counter() - start
    (out / f"{ctx.rank}.json").write_text(json.dumps({
        "rank": ctx.rank, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "local_parameters": local_parameters(model),
        "target_tokens_per_second": rows * SENTENCE * updates / seconds,
        "peak_mb": round(status_mb("VmHWM")), "after_mb": round(status_mb("RssAnon")),
    }))  # fmt: skip
    teardown_distributed()


def launch(model: str, strategy: str, processes: int, threads: int, args) -> dict:
    """One run: `processes` workers (torchrun when more than one); the ranks' figures."""
    out = Path(tempfile.mkdtemp(prefix="aiayn-scaling-"))
    flags = [model, strategy, str(args.tokens), str(args.updates), str(int(args.recompute)),
             str(out)]  # fmt: skip
    module = [sys.executable, "-m", "benchmarks.parallel_scaling", "--worker", *flags]
    if processes > 1:
        module = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={processes}", "-m", "benchmarks.parallel_scaling",
                  "--worker", *flags]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run(module, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(module)} failed:\n{done.stderr[-3000:]}")
        ranks = [json.loads((out / f"{rank}.json").read_text()) for rank in range(processes)]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "model": model, "strategy": strategy if processes > 1 else "single",
        "processes": processes, "threads_per_process": threads,
        "activation_checkpointing": args.recompute,
        "parameters": ranks[0]["parameters"], "local_parameters": ranks[0]["local_parameters"],
        "target_tokens_per_second": sum(r["target_tokens_per_second"] for r in ranks),
        "peak_mb_per_process": max(r["peak_mb"] for r in ranks),
        "after_mb_per_process": max(r["after_mb"] for r in ranks),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        model, strategy, tokens, updates, recompute, out = argv[1:7]
        worker(model, strategy, int(tokens), int(updates), bool(int(recompute)), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["paper-big", "gpt2-small"])
    parser.add_argument("--tokens", type=int, default=1024, help="target tokens per process")
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--recompute", action="store_true", help="activation checkpointing")
    parser.add_argument("--out", type=Path, default=Path("docs/parallel_scaling.json"))
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []
    for model in args.models:
        runs = [("single", 1, 1), ("single", 1, cores), ("ddp", 2, max(1, cores // 2)),
                ("fsdp", 2, max(1, cores // 2))]  # fmt: skip
        base = None
        for strategy, processes, threads in runs:
            row = launch(model, strategy, processes, threads, args)
            if processes == 1 and threads == 1:
                base = row["target_tokens_per_second"]
            row["efficiency"] = row["target_tokens_per_second"] / (processes * threads * base)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"machine": machine(), "tokens_per_process": args.tokens, "runs": rows}
    if args.out.exists():
        previous = json.loads(args.out.read_text())
        keep = [r for r in previous.get("runs", []) if r["model"] not in args.models
                or r["activation_checkpointing"] != args.recompute]  # fmt: skip
        result["runs"] = keep + rows
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
