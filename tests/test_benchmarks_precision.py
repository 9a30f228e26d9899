"""Smoke tests of `python -m benchmarks.precision` on a tiny trained run (a row per precision and
search, fp32 the reference of the others, and a table with the ratios) and of
`python -m benchmarks.profile_decoding` (int8 decoding runs through quantized kernels)."""

from __future__ import annotations

import pytest

from benchmarks.precision import precision_rows, table
from benchmarks.profile_decoding import profile_race_rows, profile_rows
from tests.tiny_runs import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_and_table(tmp_path):
    run_dir = tiny_run(tmp_path, translation=True, steps=60)
    rows = precision_rows(str(run_dir), checkpoint="best", split=None, beams=[1, 2],
                          precisions=["fp32", "int8"])  # fmt: skip
    assert [(r["precision"], r["beam"]) for r in rows] == [
        ("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)
    ]  # fmt: skip
    assert all(r["sentences"] == 8 and r["sentences_per_s"] > 0 for r in rows)
    assert all(r["same_as_fp32"] == 8 for r in rows if r["precision"] == "fp32")
    assert all(r["signature"].startswith("nrefs:1|case:mixed") for r in rows)
    lines = table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all("| 1.00x |" in line and "| +0.00 |" in line for line in lines[2:4])


def test_the_profile_of_int8_decoding_shows_quantized_linear_maps(tmp_path):
    run_dir = tiny_run(tmp_path, translation=True, steps=10)
    speed, wall, rows = profile_rows(str(run_dir), checkpoint="best", precision="int8", beam=2,
                                     sentences=8)  # fmt: skip
    assert speed > 0 and wall > 0 and all(0 <= share <= 1 for _, share, _ in rows)
    names = {name for name, _, _ in rows}
    assert "quantized::linear_dynamic" in names and "aten::linear" not in names


def test_the_race_profile_decodes_the_forced_length_on_random_weights():
    speed, wall, rows = profile_race_rows("multi30k", precision="int8", beam=2, sentences=4,
                                          out_len=5)  # fmt: skip
    assert speed > 0 and wall > 0 and all(0 <= share <= 1 for _, share, _ in rows)
    calls = {name: count for name, _, count in rows}
    assert "quantized::linear_dynamic" in calls
    assert calls["aten::topk"] == 2 * 5  # two top-k a step (candidates, survivors), 5 steps
