"""Smoke test of the decoding race (benchmarks/decode_race.py) on a tiny trained run: every
engine runs in its own process on the same batches, outputs have the forced length, and aiayn
(cached and uncached), HF `generate` and CTranslate2 float32 agree on the same weights."""

from __future__ import annotations

import json

import pytest

from tests.tiny_runs import tiny_run

pytest.importorskip("transformers", reason="the decoding race needs transformers ('.[bench]')")
pytest.importorskip("ctranslate2", reason="the decoding race needs ctranslate2 ('.[bench]')")

from aiayn.machine import cpu_has_native_bf16  # noqa: E402
from benchmarks.decode_engines import race_engines  # noqa: E402
from benchmarks.decode_race import (  # noqa: E402
    REFERENCE,
    RaceSettings,
    decoding_rows,
    decoding_table,
    write_results,
)

SETTINGS = RaceSettings(sentences=4, latency_sentences=2, batch_size=2, out_len=6, threads=1)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    run_dir = tiny_run(tmp_path_factory.mktemp("race"), translation=True, steps=30)
    return decoding_rows([], quick=True, run_dir=str(run_dir), settings=SETTINGS)


def test_every_engine_search_and_batch_size_has_a_row(rows):
    settings = {(r["engine"], r["search"], r["batch_size"]) for r in rows}
    engines = race_engines(cpu_has_native_bf16())
    assert "aiayn-int8" in engines and ("aiayn-bf16" in engines) == cpu_has_native_bf16()
    expected = {(e, s, b) for e in engines for s in ("greedy", "beam 4") for b in (2, 1)}
    assert settings == expected - {(REFERENCE, s, 1) for s in ("greedy", "beam 4")}
    for r in rows:
        assert r["sentences"] == (4 if r["batch_size"] == 2 else 2)
        assert r["sentences_per_s"] > 0 and r["tgt_tokens_per_s"] > 0
        assert "tokens" not in r and len(r["sha256"]) == 16


def test_every_engine_produces_exactly_the_forced_length(rows):
    assert all(r["out_len_min"] == r["out_len_max"] == 6 for r in rows)
    for r in rows:  # forced length: target tokens per sentence = out_len
        assert r["tgt_tokens_per_s"] == pytest.approx(6 * r["sentences_per_s"])


@pytest.mark.parametrize("search", ["greedy", "beam 4"])
def test_fp32_torch_engines_reproduce_the_uncached_reference(rows, search):
    engines = ["aiayn-cached", "aiayn-compiled", "hf"]
    engines += ["ct2-float32"] if search == "greedy" else []
    for r in rows:
        if r["engine"] in engines and r["search"] == search:
            assert r["same_as_reference"] == r["sentences"], r
            assert r["first_difference"] is None


def test_table_and_json(rows, tmp_path):
    table = decoding_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| size | batch | search | engine | sentences/s")
    assert sum(line.startswith("| ") for line in lines) == 1 + len(rows)
    assert "every engine produced exactly that" in table
    int8_row = next(line for line in lines if "| ct2-int8 |" in line)
    assert "| 1.00x |" in int8_row
    write_results(tmp_path / "race.json", rows)
    written = json.loads((tmp_path / "race.json").read_text())
    assert set(written) == {"machine", "decoding"} and written["decoding"] == rows


@pytest.mark.parametrize("ct2_on_gpu", [False, True])
def test_on_a_gpu_the_race_leaves_out_int8_and_ct2_without_its_cuda_build(monkeypatch, ct2_on_gpu):
    monkeypatch.setattr("benchmarks.decode_engines.ct2_sees_gpu", lambda: ct2_on_gpu)
    engines = race_engines(True, "cuda")
    assert "aiayn-int8" not in engines and {"aiayn-cached", "aiayn-bf16", "hf"} <= set(engines)
    assert ("ct2-int8" in engines) == ("ct2-float32" in engines) == ct2_on_gpu
    assert race_engines(True, "cpu") == race_engines(True)  # the CPU's race is unchanged


def test_gpu_rows_say_which_engines_were_left_out_and_why(rows):
    gpu_rows = [{**r, "device": "cuda"} for r in rows if not r["engine"].startswith("ct2")]
    gpu_rows = [r for r in gpu_rows if r["engine"] != "aiayn-int8"]
    table = decoding_table(gpu_rows)
    assert "aiayn-int8 not raced: torch's int8 kernels are the CPU's" in table
    assert "CTranslate2 not raced" in table and "aiayn-int8 not raced" not in decoding_table(rows)
