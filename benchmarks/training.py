"""Training throughput of one engine: target tokens/s, peak memory and MFU of full training
steps (forward, label-smoothed loss, backward, Adam) on random batches with Multi30k-like lengths.
Each engine trains with its library's loss: aiayn's `label_smoothed_cross_entropy` (gradient in
closed form), `F.cross_entropy(label_smoothing=0.1)` for the others (nn.Transformer's tutorial,
HF Marian); every engine with glibc's default malloc (`aiayn train` keeps freed memory: see
`benchmarks.training_levers`), unless the environment says otherwise: `MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647` gives every engine what `aiayn train` sets for itself.

One engine per process (`python -m benchmarks.training --engine aiayn --size multi30k
--dtype bf16 [--device cuda]`), printing JSON; `benchmarks.run` starts one process per engine and
compares. On a GPU the peak memory is CUDA's (allocated tensors), on a CPU the process's RSS.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn.train.loss import label_smoothed_cross_entropy
from benchmarks.engines import BOS, BUILDERS, EOS, PAD, SIZES, Size
from benchmarks.harness import peak_rss_mb


def multi30k_like_batches(
    size: Size, n: int, tgt_tokens: int, seed: int = 0
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """`n` (src, tgt_in, tgt_out) batches of about `tgt_tokens` target tokens, as a length-
    bucketed sampler makes them: similar lengths within a batch (Multi30k de-en subwords: mean
    ~14 target tokens, source ~1.1x longer)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        center = int(torch.randint(8, 22, (1,), generator=g))
        rows = max(1, tgt_tokens // (center + 1))
        tgt_len = torch.randint(center - 1, center + 2, (rows,), generator=g).clamp_min(1)
        src_len = (tgt_len.float() * 1.1).round().long()
        src = torch.full((rows, int(src_len.max()) + 1), PAD)
        tgt = torch.full((rows, int(tgt_len.max()) + 2), PAD)
        for i in range(rows):
            s, t = int(src_len[i]), int(tgt_len[i])
            src[i, :s] = torch.randint(4, size.vocab_size, (s,), generator=g)
            src[i, s] = EOS
            tgt[i, 0] = BOS
            tgt[i, 1 : t + 1] = torch.randint(4, size.vocab_size, (t,), generator=g)
            tgt[i, t + 1] = EOS
        batches.append((src, tgt[:, :-1], tgt[:, 1:]))
    return batches


def run(
    engine: str,
    size_name: str,
    dtype: str,
    seconds: float,
    tgt_tokens: int,
    device: str = "cpu",
    compile: bool = False,
) -> dict:
    torch.manual_seed(0)
    size, device = SIZES[size_name], torch.device(device)
    model = BUILDERS[engine](size, dropout=0.1).train().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    on_cpu = multi30k_like_batches(size, 16, tgt_tokens)
    batches = [tuple(t.to(device) for t in batch) for batch in on_cpu]
    bf16 = dtype == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    cuda = device.type == "cuda"

    def forward_loss(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        with autocast:
            logits = model(src, tgt_in)
        if engine == "aiayn":  # the loss `aiayn train` uses: its gradient in closed form
            out = label_smoothed_cross_entropy(logits, tgt_out, epsilon=0.1, ignore_index=PAD)
            return out.loss / out.n_tokens
        return F.cross_entropy(
            logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
            label_smoothing=0.1,
        )  # fmt: skip

    # torch.compile of the forward and the loss (and so of their backward); Adam stays eager.
    # Shapes vary by batch: the first new shape recompiles once with dynamic sizes.
    loss_of = torch.compile(forward_loss) if compile else forward_loss

    def step(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> None:
        loss = loss_of(src, tgt_in, tgt_out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def peak_mb() -> float:
        return torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()

    before = peak_mb()
    warm_start = time.perf_counter()
    for batch in batches[:3] if not compile else batches:  # warm-up (compiled: every shape)
        step(*batch)
    warm_up_s = time.perf_counter() - warm_start
    steps, tokens, flops = 0, 0, 0.0
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 4:
        step(*batches[steps % len(batches)])
        src, tgt_in, tgt_out = on_cpu[steps % len(batches)]  # counted here: no GPU sync
        n_src, n_tgt = int((src != PAD).sum()), int((tgt_out != PAD).sum())
        per_src, per_tgt = size.flops_per_token(src.size(1), tgt_in.size(1))
        flops += 3 * (n_src * per_src + n_tgt * per_tgt)  # forward + backward = 3x forward
        steps += 1
        tokens += n_tgt
        if cuda and steps % 8 == 0:
            torch.cuda.synchronize(device)  # keep the clock within a few steps of the GPU
    if cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "engine": engine,
        "size": size_name,
        "dtype": dtype,
        "compiled": compile,
        "warm_up_s": warm_up_s,
        "device": str(device),
        "tgt_tokens_per_batch": tgt_tokens,
        "steps": steps,
        "tgt_tokens_per_s": tokens / elapsed,
        "model_gflops_per_s": flops / elapsed / 1e9,
        "peak_mb": peak_mb(),
        "step_mb": peak_mb() - before,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=sorted(BUILDERS), required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="multi30k")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tgt-tokens", type=int, default=2000, help="target tokens per batch")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the forward and loss; warm_up_s then includes the compile time",
    )  # fmt: skip
    args = parser.parse_args()
    row = run(
        args.engine, args.size, args.dtype, args.seconds, args.tgt_tokens, args.device,
        args.compile,
    )  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    main()
