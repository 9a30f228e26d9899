"""The machine description: CPU flags read from /proc/cpuinfo text, native bf16 decided from
hardware and kernel caps, `precision: auto` resolved, threads fitted to the usable cores."""

from __future__ import annotations

import dataclasses
import os
import platform

import pytest
import torch

from aiayn.machine import (
    Machine,
    _torch_x86_flags,
    bf16_slowdown,
    cpu_native_bf16,
    cuda_native_bf16,
    describe_machine,
    fit_threads_to_cores,
    keep_freed_memory,
    parse_cpuinfo,
    resolve_precision,
    usable_cores,
)

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 bmi2
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sve i8mm bf16 rng
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_cpuinfo_gives_the_model_and_the_flags_that_matter():
    assert parse_cpuinfo(EPYC_AVX2) == ("AMD EPYC 7B13", ("avx2", "fma"))
    model, flags = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert flags == ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    model, flags = parse_cpuinfo(GRAVITON3)
    assert model == "ARM CPU (implementer 0x41, part 0xd40)"
    assert flags == ("asimd", "sve", "bf16", "i8mm")
    assert parse_cpuinfo("") == ("unknown CPU", ())


@pytest.mark.parametrize(
    ("arch", "cpuinfo", "torch_isa", "onednn", "native", "reason"),
    [
        ("x86_64", EPYC_AVX2, "AVX2", None, False, "no native bf16, lacking AVX512-BF16 and AMX"),
        ("x86_64", SAPPHIRE_RAPIDS, "AVX512", None, True, "AVX512_BF16/AMX_BF16"),
        ("x86_64", SAPPHIRE_RAPIDS, "AVX512", "AVX512_CORE_AMX", True, "AVX512_BF16"),
        ("x86_64", SAPPHIRE_RAPIDS, "AVX512", "all", True, "AVX512_BF16"),
        # ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2: the AVX2 machine, emulated
        ("x86_64", SAPPHIRE_RAPIDS, "AVX2", "AVX2", False, "ONEDNN_MAX_CPU_ISA=AVX2"),
        ("x86_64", SAPPHIRE_RAPIDS, "AVX2", None, False, "torch kernels AVX2"),
        ("x86_64", SAPPHIRE_RAPIDS, "AVX512", "AVX512_CORE", False, "ONEDNN_MAX_CPU_ISA"),
        ("aarch64", GRAVITON3, "SVE256", None, True, "ARM BF16 extension"),
        (
            "aarch64",
            "Features\t: fp asimd\n",
            "DEFAULT",
            None,
            False,
            "lacking the ARM BF16 extension",
        ),
        ("riscv64", "", "DEFAULT", None, False, "not known for riscv64"),
    ],
)
def test_native_bf16_follows_the_hardware_and_the_kernel_caps(
    arch, cpuinfo, torch_isa, onednn, native, reason
):
    _, flags = parse_cpuinfo(cpuinfo)
    got, why = cpu_native_bf16(arch, flags, torch_isa=torch_isa, onednn_max_isa=onednn)
    assert got is native and reason in why


def test_gpus_have_native_bf16_from_ampere_on():
    assert cuda_native_bf16((8, 0))[0] and cuda_native_bf16((9, 0))[0]
    assert not cuda_native_bf16((7, 5))[0] and "sm 7.5" in cuda_native_bf16((7, 5))[1]


def fake_machine(**changes) -> Machine:
    base = Machine(
        device="cpu", cpu_model="AMD EPYC 7B13", arch="x86_64", cpu_flags=("avx2", "fma"),
        torch_isa="AVX2", native_bf16=False, bf16_reason="this CPU has no native bf16",
        cores=2, threads=2, torch_version="2.13.0",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (fake_machine(), "fp32"),
        (fake_machine(native_bf16=True, bf16_reason="this CPU has AMX_BF16"), "bf16"),
        (
            fake_machine(device="cuda:0", gpu="H100", gpu_capability=(9, 0), native_bf16=True),
            "bf16",
        ),
        (fake_machine(device="cuda:0", gpu="Tesla T4", gpu_capability=(7, 5)), "fp16"),
        (fake_machine(device="cuda:0", gpu="Tesla P100", gpu_capability=(6, 0)), "fp32"),
    ],
)
def test_auto_precision_is_bf16_only_where_native_and_never_fp16_on_a_cpu(machine, expected):
    precision, reason = resolve_precision("auto", machine)
    assert precision == expected and reason.startswith("auto: ")
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, machine) == (explicit, "as configured")


def test_this_machine_is_described_as_torch_sees_it():
    machine = describe_machine("cpu")
    assert machine.torch_isa == torch.backends.cpu.get_cpu_capability()
    assert machine.threads == torch.get_num_threads() and 1 <= machine.cores <= os.cpu_count()
    assert machine.cpu_model in machine.summary() and machine.torch_version in machine.summary()
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        # our reading of /proc/cpuinfo agrees with torch's own (the fallback elsewhere)
        from_torch = _torch_x86_flags()
        for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile"):
            assert (flag in machine.cpu_flags) == (flag in from_torch), flag
    record = machine.to_dict()
    assert record["summary"] == machine.summary() and record["cpu_flags"] == list(machine.cpu_flags)


def test_capping_onednn_below_bf16_turns_native_bf16_off(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    machine = describe_machine("cpu")
    assert not machine.native_bf16 and resolve_precision("auto", machine)[0] == "fp32"


def test_bf16_slowdown_is_a_ratio_of_two_measured_rates():
    assert bf16_slowdown(n=32, seconds=0.01) > 0


def test_threads_are_capped_at_the_usable_cores_unless_omp_num_threads_is_set(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(usable_cores() + 3)
        assert fit_threads_to_cores() == usable_cores() == torch.get_num_threads()
        torch.set_num_threads(1)
        assert fit_threads_to_cores() == 1  # never more than torch (or the user) chose
        monkeypatch.setenv("OMP_NUM_THREADS", str(usable_cores() + 3))
        torch.set_num_threads(usable_cores() + 3)
        assert fit_threads_to_cores() == usable_cores() + 3
    finally:
        torch.set_num_threads(before)


def minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_freed_memory_is_reused_without_page_faults(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MALLOC_")] + [
        "GLIBC_TUNABLES",
        "LD_PRELOAD",
    ]:
        monkeypatch.delenv(key, raising=False)
    assert keep_freed_memory().startswith("glibc malloc keeps freed memory")
    size = 96 * 2**20 // 4  # 96 MiB of fp32: above glibc's largest mmap threshold (32 MiB)
    for _ in range(4):
        torch.ones(size).sum()  # the heap grows (a few times: alignment, other blocks) ...
    before = minor_faults()
    for _ in range(8):
        torch.ones(size).sum()  # ... and then the same blocks are mostly filled again
    pages = 8 * size * 4 // os.sysconf("SC_PAGE_SIZE")
    assert minor_faults() - before < pages // 3  # glibc's default: every page faults, each time


def test_own_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() == "glibc malloc left as the environment sets it"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert keep_freed_memory().startswith("malloc left as preloaded")
