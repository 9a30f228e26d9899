"""The benchmark page's training table: ratios against the anchor, the peak MFU is taken
against, and bf16 rows left out (with the reason) on a CPU without native bf16."""

from __future__ import annotations

from benchmarks.run import TRAINING_ENGINES, training_dtypes, training_table


def rows(dtype: str, speeds: list[float]) -> list[dict]:
    return [
        dict(size="multi30k", dtype=dtype, engine=engine, tgt_tokens_per_s=speed, mfu=speed / 1e3,
             peak_mb=1000.0)
        for engine, speed in zip(TRAINING_ENGINES, speeds, strict=True)
    ]  # fmt: skip


def test_without_native_bf16_only_fp32_is_raced_and_the_page_says_why():
    assert training_dtypes(native_bf16=False) == ("fp32",)
    reason = "this CPU has no native bf16, lacking AVX512-BF16 and AMX"
    table = training_table(
        rows("fp32", [100, 110, 150]), {"native_bf16": False, "bf16_reason": reason}
    )
    lines = table.splitlines()
    assert "MFU (fp32 peak)" in lines[0]
    aiayn = next(line for line in lines if f"| {TRAINING_ENGINES[-1]} |" in line)
    assert "| 1.50x | 15% |" in aiayn
    assert f"bf16 rows skipped: {reason}" in table


def test_with_native_bf16_both_dtypes_are_raced_against_torch_fp32():
    assert training_dtypes(native_bf16=True) == ("fp32", "bf16")
    machine = {"native_bf16": True, "bf16_reason": "this CPU has AVX512_BF16"}
    table = training_table(rows("fp32", [100, 110, 150]) + rows("bf16", [200, 210, 300]), machine)
    assert "MFU (bf16 peak)" in table and "skipped" not in table
    bf16_aiayn = next(line for line in table.splitlines() if "| bf16 | aiayn |" in line)
    assert "| 3.00x |" in bf16_aiayn and bf16_aiayn.endswith("| 1.50x |")


def test_gpu_tables_name_gpu_memory_and_the_batch():
    machine = {"native_bf16": True, "bf16_reason": "sm 9.0", "device": "cuda:0"}
    gpu_rows = [{**r, "tgt_tokens_per_batch": 25_000} for r in rows("bf16", [1, 2, 3])]
    table = training_table(rows("fp32", [1, 2, 3]) + gpu_rows, machine)
    assert "| peak GPU MB |" in table.splitlines()[0]
    assert "Batches of about 25,000 target tokens." in table


def test_the_training_benchmark_times_full_steps_of_each_engine():
    from benchmarks.training import run

    for engine in TRAINING_ENGINES[:1] + TRAINING_ENGINES[-1:]:  # torch, aiayn
        row = run(engine, "multi30k", "fp32", seconds=0.0, tgt_tokens=64, device="cpu")
        assert row["steps"] == 4 and row["tgt_tokens_per_s"] > 0 and row["peak_mb"] > 0
        assert row["device"] == "cpu" and row["tgt_tokens_per_batch"] == 64
