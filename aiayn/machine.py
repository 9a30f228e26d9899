"""What this machine is: its device, the CPU's model and the instruction-set flags that decide
speed, whether it multiplies bf16 natively, and the cores and threads torch uses. Training
resolves `precision: auto` here; the benchmarks and the results pages name the machine with it.

Native bf16 is read from the hardware and from the variables that cap the kernels torch may
use (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`), never from a timing probe: x86 CPUs with
AVX512-BF16 or AMX, ARM CPUs with the BF16 extension, CUDA devices of compute capability 8.0+.
Elsewhere a bf16 matrix multiply is emulated: on an AVX2 CPU it ran 25-90x slower than fp32.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""The x86 flags (as /proc/cpuinfo spells them) that decide which kernels torch runs."""
ARM_FLAGS = ("asimd", "sve", "bf16", "i8mm")
"""The aarch64 features (as /proc/cpuinfo spells them) that decide which kernels torch runs."""
BF16_ONEDNN_ISAS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX")
"""`ONEDNN_MAX_CPU_ISA` values (and those starting with them) that still allow bf16 kernels."""

X86_ARCHES = ("x86_64", "AMD64", "i686")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc's `mallopt` parameters (<malloc.h>)."""
TRIM_THRESHOLD = 2**31 - 1
"""Free memory at the top of the heap glibc keeps before it gives some back: 2 GiB."""
Precision = str  # "fp32" | "bf16" | "fp16"


@dataclass(frozen=True)
class Machine:
    """One machine as the run sees it; `summary()` is the line the pages and run headers print."""

    device: str
    """`cpu`, `cuda:0`, ..."""
    cpu_model: str
    """As the operating system names it (`AMD EPYC 9654`, `Intel(R) Xeon(R) ...`)."""
    arch: str
    """`x86_64`, `aarch64`, `arm64`."""
    cpu_flags: tuple[str, ...]
    """Those of `X86_FLAGS` / `ARM_FLAGS` the CPU has."""
    torch_isa: str
    """The vector kernels torch's own operators run (`AVX2`, `AVX512`, `DEFAULT`, ...)."""
    native_bf16: bool
    """The device multiplies bf16 matrices natively (fast), so `precision: auto` picks bf16."""
    bf16_reason: str
    """Why `native_bf16` is what it is, in words."""
    cores: int
    """CPUs this process may run on (its affinity, capped by a container's CPU quota)."""
    threads: int
    """torch's intra-op threads."""
    torch_version: str
    gpu: str | None = None
    """The CUDA device's name, when the device is one."""
    gpu_capability: tuple[int, int] | None = None
    """Its compute capability (8, 0) ..."""

    def summary(self) -> str:
        """`AMD EPYC (x86_64: avx2 fma; torch kernels AVX2), no native bf16, 2 cores, 2 threads,
        torch 2.13.0`."""
        flags = " ".join(self.cpu_flags) or "no listed flags"
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        cpu = f"{self.cpu_model} ({self.arch}: {flags}; torch kernels {self.torch_isa})"
        where = f"{self.gpu} ({bf16}); host {cpu}" if self.gpu else f"{cpu}, {bf16}"
        return f"{where}, {self.cores} cores, {self.threads} threads, torch {self.torch_version}"

    def to_dict(self) -> dict:
        """Plain values for JSON (benchmark results, metrics.jsonl)."""
        return {**asdict(self), "cpu_flags": list(self.cpu_flags), "summary": self.summary()}


def describe_machine(device: str | torch.device = "cpu") -> Machine:
    """Read this machine: CPU model and flags, torch's kernel level, native bf16 on `device`."""
    device = torch.device(device)
    arch, cpu_model, flags = platform.machine(), *_cpu_model_and_flags()
    torch_isa = torch.backends.cpu.get_cpu_capability()
    gpu, capability = None, None
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        gpu, capability = torch.cuda.get_device_name(index), (major, minor)
        native, reason = cuda_native_bf16(capability)
    elif device.type == "cpu":
        env = os.environ.get
        native, reason = cpu_native_bf16(
            arch, flags, torch_isa=torch_isa, onednn_max_isa=env("ONEDNN_MAX_CPU_ISA")
        )
    else:
        native, reason = False, f"bf16 is not chosen automatically on {device.type}"
    return Machine(
        device=str(device),
        cpu_model=cpu_model,
        arch=arch,
        cpu_flags=flags,
        torch_isa=torch_isa,
        native_bf16=native,
        bf16_reason=reason,
        cores=usable_cores(),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__.split("+")[0],
        gpu=gpu,
        gpu_capability=capability,
    )


def cpu_native_bf16(
    arch: str, flags: tuple[str, ...], *, torch_isa: str, onednn_max_isa: str | None
) -> tuple[bool, str]:
    """Whether a CPU with these flags multiplies bf16 natively under torch's kernel caps.

    x86: AVX512-BF16 or AMX, with torch's kernels at AVX512 or above and `ONEDNN_MAX_CPU_ISA`
    (the matrix-multiply library's cap) unset or at a bf16 level. ARM: the BF16 extension.
    """
    if arch in X86_ARCHES:
        has = [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
        if not has:
            return False, "this CPU has no native bf16, lacking AVX512-BF16 and AMX"
        capped = _onednn_caps_bf16(onednn_max_isa)
        if not torch_isa.upper().startswith(("AVX512", "AMX")) or capped:
            cap = f"ONEDNN_MAX_CPU_ISA={onednn_max_isa}" if capped else f"torch kernels {torch_isa}"
            return False, f"this CPU has {'/'.join(has)} but {cap} keeps bf16 off the fast path"
        return True, f"this CPU has {'/'.join(has).upper()}"
    if arch in ("aarch64", "arm64"):
        if "bf16" in flags:
            return True, "this CPU has the ARM BF16 extension"
        return False, "this CPU has no native bf16, lacking the ARM BF16 extension"
    return False, f"native bf16 is not known for {arch or 'this'} CPUs"


@torch.compiler.assume_constant_result
def cpu_has_native_bf16() -> bool:
    """This CPU's `native_bf16`, read once per process (for choices made on every call; a
    constant to `torch.compile`, which would otherwise break its graph at the file reads)."""
    return _cpu_has_native_bf16()


@functools.cache
def _cpu_has_native_bf16() -> bool:
    return describe_machine("cpu").native_bf16


def cuda_native_bf16(capability: tuple[int, int]) -> tuple[bool, str]:
    """bf16 tensor cores come with compute capability 8.0 (Ampere) and later."""
    if capability >= (8, 0):
        return True, f"this GPU (sm {capability[0]}.{capability[1]}) has bf16 tensor cores"
    return False, f"this GPU (sm {capability[0]}.{capability[1]}) has no bf16 tensor cores"


def resolve_precision(requested: str, machine: Machine) -> tuple[Precision, str]:
    """`auto` -> bf16 where the device multiplies bf16 natively; fp16 on a CUDA device of compute
    capability 7.x (fp16 tensor cores, no bf16); fp32 elsewhere (never fp16 on a CPU). Any
    other request is returned as it is. Returns (precision, reason)."""
    if requested != "auto":
        return requested, "as configured"
    if machine.native_bf16:
        return "bf16", f"auto: {machine.bf16_reason}"
    if machine.gpu_capability is not None and machine.gpu_capability >= (7, 0):
        return "fp16", f"auto: {machine.bf16_reason}; fp16 tensor cores with loss scaling"
    return "fp32", f"auto: {machine.bf16_reason}"


def bf16_slowdown(n: int = 256, seconds: float = 0.1) -> float:
    """How many times slower n x n bf16 matrix multiplies run than fp32 on this CPU (measured:
    only to tell a user who asked for bf16 what it costs here, never to decide)."""
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(n, n).to(dtype)
        x @ x  # warm-up
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            x @ x
            count += 1
        rates.append(count / elapsed)
    return rates[0] / rates[1]


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (a
    container started with `--cpus 2` on a 64-core host may use 2, though it sees 64)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    quota = Path("/sys/fs/cgroup/cpu.max")
    try:
        limit, period = quota.read_text().split()[:2]
        if limit != "max":
            cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def fit_threads_to_cores() -> int:
    """Cap torch's threads at the usable cores, unless OMP_NUM_THREADS says otherwise; returns
    the threads. torch counts the host's cores, and in a container with a CPU quota its extra
    threads spin-wait on each other (5-10x slower); it is never given more than it chose."""
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cores():
        torch.set_num_threads(usable_cores())
    return torch.get_num_threads()


def _cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and those of the flags that matter: from /proc/cpuinfo on Linux;
    elsewhere from torch's own x86 queries, or sysctl on an Apple CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    darwin = platform.system() == "Darwin"
    model = (_sysctl("machdep.cpu.brand_string") if darwin else None) or platform.processor()
    model = model or "unknown CPU"
    if platform.machine() in X86_ARCHES:
        return model, _torch_x86_flags()
    if darwin and _sysctl("hw.optional.arm.FEAT_BF16") == "1":
        return model, ("asimd", "bf16")
    return model, ()


def _torch_x86_flags() -> tuple[str, ...]:
    """The x86 flags as torch's cpuinfo library reads them (where there is no /proc/cpuinfo)."""
    queries = {
        "avx2": "_is_avx2_supported",
        "avx512f": "_is_avx512_supported",
        "avx512_vnni": "_is_vnni_supported",
        "avx512_bf16": "_is_avx512_bf16_supported",
        "amx_tile": "_is_amx_tile_supported",
    }
    have = {flag for flag, query in queries.items() if getattr(torch.cpu, query, lambda: False)()}
    return tuple(flag for flag in X86_FLAGS if flag in have)


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, the listed flags present) from the text of /proc/cpuinfo, x86 or ARM."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Model name") or fields.get("Hardware")
    if model is None and "CPU part" in fields:
        model = f"ARM CPU (implementer {fields.get('CPU implementer')}, part {fields['CPU part']})"
    return model or "unknown CPU", tuple(f for f in X86_FLAGS + ARM_FLAGS if f in present)


def _onednn_caps_bf16(value: str | None) -> bool:
    """True when `ONEDNN_MAX_CPU_ISA` holds oneDNN below its bf16 kernels."""
    if not value or value.upper() in ("ALL", "DEFAULT"):
        return False
    return not value.upper().startswith(BF16_ONEDNN_ISAS)


def _sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def keep_freed_memory() -> str:
    """Have glibc's malloc keep the memory torch frees, for the next tensor of that size.

    By default glibc serves every allocation above 32 MiB with a fresh `mmap` and unmaps it on
    free, so each large tensor (a training step's logits and their gradient: tokens x
    vocabulary x 4 bytes, 131 MB at the Multi30k size) is paid for again in page faults, as
    much time as computing it: a 131 MB copy took 64 ms, against 8 ms into reused memory, on a
    2-core AVX2 EPYC. Smaller tensors pay too (glibc's thresholds adapt, and it gives the top of
    the heap back): with a beam search's scores over the vocabulary (beam 4 x 32 sentences x
    37,000 words, 19 MB a step), int8 decoding at paper-base size ran 1.1-1.6x slower. With
    `mmap` off and the heap trimmed only past 2 GiB, freed blocks are reused (what jemalloc and
    tcmalloc do, which Intel's PyTorch CPU guide preloads); the price is a resident size that
    stays at the process's high-water mark. `aiayn train`, the inference commands and `aiayn
    serve` call it at start; the library (`aiayn.load`) leaves the caller's process alone.
    Left alone where the process was started with its own malloc settings (`MALLOC_*`,
    `GLIBC_TUNABLES`) or a preloaded allocator, and off glibc. Returns what was done, in words,
    for the run's header.
    """
    preloaded = os.environ.get("LD_PRELOAD", "")
    if any(name in preloaded for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return f"malloc left as preloaded ({preloaded})"
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc" in tunables or any(key.startswith("MALLOC_") for key in os.environ):
        return "glibc malloc left as the environment sets it"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the system's malloc (not glibc: left alone)"
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc malloc unchanged (mallopt refused)"
    return "glibc malloc keeps freed memory for reuse (no mmap, trim past 2 GiB)"
