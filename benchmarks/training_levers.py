"""What two training-step levers are worth, each against the step without them, in one run:
the label-smoothed loss's gradient in closed form (`aiayn.train.loss.SmoothedCrossEntropy`)
against autograd's way through log-softmax, gather and mean; and glibc's malloc kept from
unmapping freed tensors (`aiayn.machine.keep_freed_memory`) against its default.

    python -m benchmarks.training_levers [--size multi30k] [--rounds 3] [--steps 8]

Each variant runs in its own process (the allocator's setting is per process), and the rounds
interleave the variants so that a host's drift falls on all of them; a variant's figure is its
best round. Full fp32 training steps of the aiayn model (forward, loss, backward, Adam, dropout
0.1) on the training harness's random Multi30k-like batches, ~3,800 target tokens each (the
main job's batches hold ~3,770). Prints one table and the JSON rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import Tensor

from benchmarks.engines import PAD, SIZES, build_aiayn
from benchmarks.harness import child, machine
from benchmarks.training import multi30k_like_batches

VARIANTS = {
    "autograd loss, default malloc": ("autograd", False),
    "closed-form loss, default malloc": ("closed-form", False),
    "autograd loss, freed memory kept": ("autograd", True),
    "closed-form loss, freed memory kept": ("closed-form", True),
}
"""The first is the anchor: the step as it was before either lever."""


def autograd_loss(logits: Tensor, target: Tensor, epsilon: float = 0.1) -> Tensor:
    """The loss of `aiayn.train.loss` written for autograd to differentiate (the anchor)."""
    log_probs = logits.float().log_softmax(dim=-1)  # (batch, len, vocab)
    keep = target != PAD
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = (1.0 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)
    return loss.where(keep, loss.new_zeros(())).sum()


def measure(loss_kind: str, keep_memory: bool, size: str, steps: int, tgt_tokens: int) -> dict:
    """Seconds per training step of one variant, in this process."""
    from aiayn.machine import keep_freed_memory
    from aiayn.train.loss import label_smoothed_cross_entropy

    allocator = keep_freed_memory() if keep_memory else "glibc's default"
    torch.manual_seed(0)
    model = build_aiayn(SIZES[size], dropout=0.1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    batches = multi30k_like_batches(SIZES[size], steps, tgt_tokens)

    def step(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> int:
        logits = model(src, tgt_in)  # (batch, len, vocab)
        if loss_kind == "autograd":
            loss = autograd_loss(logits, tgt_out)
        else:
            loss = label_smoothed_cross_entropy(logits, tgt_out, epsilon=0.1, ignore_index=PAD)
            loss = loss.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int((tgt_out != PAD).sum())

    for batch in batches[:3]:  # warm-up: the allocator's heap grows to the step's needs
        step(*batch)
    start, tokens = time.perf_counter(), 0
    for batch in batches:
        tokens += step(*batch)
    seconds = time.perf_counter() - start
    return {"s_per_step": seconds / steps, "tgt_tokens_per_s": tokens / seconds,
            "allocator": allocator}  # fmt: skip


def table(rows: list[dict]) -> str:
    anchor = rows[0]["best_s_per_step"]
    lines = ["| variant | s per step, best (median) | target tokens/s | vs the anchor |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['best_s_per_step']:.3f} ({row['median_s_per_step']:.3f})"
            f" | {row['tgt_tokens_per_s']:,.0f} | {anchor / row['best_s_per_step']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="multi30k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--tgt-tokens", type=int, default=3800, help="target tokens per batch")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child: one variant, one round
        print(json.dumps(measure(*VARIANTS[args.variant], args.size, args.steps, args.tgt_tokens)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            flags = ["--size", args.size, "--steps", str(args.steps)]
            flags += ["--tgt-tokens", str(args.tgt_tokens), "--variant", name]
            runs[name].append(child("benchmarks.training_levers", *flags))
    rows = []
    for name, results in runs.items():
        best = min(results, key=lambda r: r["s_per_step"])
        rows.append({
            "variant": name, "size": args.size, "best_s_per_step": best["s_per_step"],
            "median_s_per_step": statistics.median(r["s_per_step"] for r in results),
            "tgt_tokens_per_s": best["tgt_tokens_per_s"], "allocator": best["allocator"],
            "rounds": [r["s_per_step"] for r in results],
        })  # fmt: skip
    print(f"machine: {machine()['summary']}")
    print(table(rows))
    print(json.dumps({"machine": machine(), "rows": rows}))


if __name__ == "__main__":
    main()
