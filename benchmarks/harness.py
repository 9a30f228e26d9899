"""What every benchmark shares, and nothing else: the machine the figures come from, a child
process per engine (so no engine's threads or caches touch another's), and peak memory.

A leaf: it imports no other benchmark module.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiayn.machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent
"""The repository: child processes run here, so `python -m benchmarks.x` resolves."""


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine (aiayn.machine: CPU model, flags, native bf16, cores, threads, torch) and
    the Python that ran the figures."""
    return {**describe_machine(device).to_dict(), "python": platform.python_version()}


def child(module: str, *args: str, threads: int | None = None) -> Any:
    """Run `python -m module args` in the repository and parse the JSON it prints last;
    `threads` sets OMP_NUM_THREADS for it."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
