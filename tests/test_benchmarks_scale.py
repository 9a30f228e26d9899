"""The scale benchmarks' parts: the generated corpora (benchmarks/data_scale.py) are prefixes of
one seeded stream, the memory probe reads a process tree, and a 2-process FSDP run of
benchmarks/parallel_scaling.py holds half the parameters per process."""

from __future__ import annotations

import argparse
import gzip
import os
import sys

import pytest

from benchmarks.data_scale import measured, perturbed, tree_memory, write_corpora
from benchmarks.parallel_scaling import launch

POOL = [(f"das ist satz nummer {i} hier", f"this is sentence number {i} here") for i in range(50)]


def lines(path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def test_corpora_are_prefixes_of_one_seeded_stream_of_changed_pairs(tmp_path):
    folders = write_corpora(POOL, [20, 60], tmp_path)
    small, big = (lines(folders[n] / "train.en.gz") for n in (20, 60))
    assert len(small) == 20 and len(big) == 60 and big[:20] == small
    assert len(lines(folders[60] / "train.de.gz")) == 60
    stream = perturbed(POOL)
    again = [next(stream)[1] for _ in range(60)]
    assert again == big  # seeded: the same corpus every run
    assert any(line not in {en for _, en in POOL} for line in big)  # changed, not copied


def test_the_memory_probe_counts_children(tmp_path):
    anon, rss = tree_memory(os.getpid())
    assert 0 < anon <= rss
    grow = "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * (300 * 256); time.sleep(1)"
    result = measured([sys.executable, "-c", grow], timeout=60)
    assert result["finished"] and result["peak_anon_mb"] >= 300
    stopped = measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert not stopped["finished"]
    with pytest.raises(RuntimeError, match="failed"):
        measured([sys.executable, "-c", "raise SystemExit(3)"], timeout=60)


@pytest.mark.integration
def test_fsdp_holds_half_the_parameters_per_process():
    settings = argparse.Namespace(tokens=32, updates=1, recompute=True)
    ddp = launch("cpu-small", "ddp", 2, 1, settings)
    fsdp = launch("cpu-small", "fsdp", 2, 1, settings)
    assert ddp["local_parameters"] == ddp["parameters"] == fsdp["parameters"]
    assert fsdp["local_parameters"] == pytest.approx(fsdp["parameters"] / 2, rel=0.01)
    assert ddp["target_tokens_per_second"] > 0 and fsdp["target_tokens_per_second"] > 0
