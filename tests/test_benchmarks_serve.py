"""Smoke test of the server's load test (benchmarks/serve.py) on a tiny run: both modes answer
every request, batching gathers requests while one-at-a-time does not, and both give the same
translations."""

from __future__ import annotations

import pytest

from tests.tiny_runs import WORDS, tiny_run

pytest.importorskip("fastapi", reason="the load test needs the serve extra")

from benchmarks.serve import main  # noqa: E402


def test_the_load_test_reports_both_modes_without_errors(tmp_path):
    run_dir = tiny_run(tmp_path, translation=True, steps=10)
    source = tmp_path / "sentences.txt"
    source.write_text("".join(f"der {word} im garten\n" for word in sorted(WORDS)))
    result = main([str(run_dir), "--requests", "40", "--concurrency", "8", "--beam", "2",
                   "--source", str(source), "--threads", "1"])  # fmt: skip
    batched, alone = result["rows"]
    assert (batched["mode"], alone["mode"]) == ("dynamic batching", "one at a time")
    for row in (batched, alone):
        assert row["ok"] == 40 and row["errors"] == 0 and row["rejected_503"] == 0
        assert row["latency_ms_p50"] <= row["latency_ms_p95"] <= row["latency_ms_p99"]
        assert row["server_rss_mb_after"] > 0
    assert alone["requests_per_batch"] == 1.0 and batched["requests_per_batch"] > 1.0
    assert result["same_translations"] and result["batching_speedup"] > 0
