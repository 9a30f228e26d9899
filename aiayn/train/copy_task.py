"""The copy task: learn to reproduce random symbol sequences (the Annotated Transformer's first
example). Small enough to train in a minute on a CPU, hard enough to need attention."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import greedy_search
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import Transformer

N_SPECIAL = 4  # pad, unk, bos, eos come first in the vocabulary


@dataclass(frozen=True)
class CopyTask:
    """Random sequences of `min_len`..`max_len` symbols drawn from `n_symbols` symbols."""

    n_symbols: int = 10
    min_len: int = 3
    max_len: int = 10

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_symbols

    def sample(self, batch: int, generator: torch.Generator) -> list[Tensor]:
        lengths = torch.randint(self.min_len, self.max_len + 1, (batch,), generator=generator)
        return [
            torch.randint(N_SPECIAL, self.vocab_size, (int(n),), generator=generator)
            for n in lengths
        ]


def copy_batch(sequences: list[Tensor], config: ModelConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Sequences -> (src, tgt_in, tgt_out), right-padded: src = seq EOS, tgt_in = BOS seq,
    tgt_out = seq EOS."""
    longest = max(len(s) for s in sequences) + 1
    src = torch.full((len(sequences), longest), config.pad_id)
    tgt_in, tgt_out = src.clone(), src.clone()
    for row, seq in enumerate(sequences):
        n = len(seq)
        src[row, :n], src[row, n] = seq, config.eos_id
        tgt_in[row, 0], tgt_in[row, 1 : n + 1] = config.bos_id, seq
        tgt_out[row, :n], tgt_out[row, n] = seq, config.eos_id
    return src, tgt_in, tgt_out


def copy_model_config(task: CopyTask) -> ModelConfig:
    """A 2-layer encoder-decoder sized for the task."""
    return ModelConfig(
        vocab_size=task.vocab_size,
        d_model=64,
        n_heads=4,
        d_ff=128,
        n_encoder_layers=2,
        n_decoder_layers=2,
        dropout=0.0,
        max_len=64,
    )


def train_copy_task(
    task: CopyTask,
    *,
    steps: int = 500,
    seconds: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> Transformer:
    """Train a fresh model on the copy task for `steps` updates, or for `seconds` if given.

    The learning rate warms up linearly, then decays linearly to zero at the end of the budget
    (measured in steps, or in time when `seconds` is given).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = copy_model_config(task)
    model = Transformer(config).train()
    peak_lr, warmup = 3e-3, 50
    optimizer = torch.optim.Adam(model.parameters(), lr=peak_lr, betas=(0.9, 0.98), eps=1e-9)
    start, step, progress = time.perf_counter(), 0, 0.0
    while progress < 1.0:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = peak_lr * min(step / warmup, 1.0 - progress)
        src, tgt_in, tgt_out = copy_batch(task.sample(batch_size, generator), config)
        logits = model(src, tgt_in)  # (batch, tgt_len, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=config.pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        progress = step / steps if seconds is None else elapsed / seconds
    return model.eval()


def demo(*, seconds: float = 60.0, seed: int = 0, n_examples: int = 8) -> float:
    """Train on the copy task for `seconds`, print decoded examples; return held-out accuracy."""
    task = CopyTask()
    print(f"Training a 2-layer Transformer on the copy task for {seconds:.0f} s on the CPU ...")
    model = train_copy_task(task, seconds=seconds, seed=seed)
    sequences = task.sample(200, torch.Generator().manual_seed(seed + 1))
    src, _, tgt_out = copy_batch(sequences, model.config)
    out = greedy_search(
        model, src, options=DecodeOptions(max_len_a=0.0, max_len_b=task.max_len + 2)
    )
    exact = [
        out[i, : len(s) + 1].tolist() == tgt_out[i, : len(s) + 1].tolist()
        for i, s in enumerate(sequences)
    ]
    for seq, row in list(zip(sequences, out, strict=True))[:n_examples]:
        decoded = row.tolist()
        eos = model.config.eos_id
        decoded = decoded[: decoded.index(eos)] if eos in decoded else decoded
        print(f"source {seq.tolist()} -> decoded {decoded}")
    accuracy = sum(exact) / len(exact)
    print(f"held-out sequences copied exactly: {sum(exact)}/{len(exact)} ({accuracy:.0%})")
    return accuracy
