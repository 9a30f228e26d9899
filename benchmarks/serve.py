"""Load test of `aiayn serve`: clients at a fixed concurrency send a fixed number of one-sentence
translation requests to a server on 127.0.0.1, once with dynamic batching (the defaults) and
once with every request decoded alone (`--max-batch-tokens 1`), in the same run.

    python -m benchmarks.serve RUN_DIR [--requests 400] [--concurrency 16] [--beam 4]
                                       [--source FILE] [--out results.json]

Reports per mode: requests/s, latency p50/p95/p99, errors (anything but 200 and the queue's
503), 503s, the server's resident memory after warm-up and after the load, batches the worker
ran; and the ratio of the two modes' throughput. Both modes must give the same translations
(checked). Sentences: `--source` (one per line), else Multi30k's test2016 source side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aiayn.data.corpus import multi30k_files, read_lines
from benchmarks.harness import ROOT, machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """A process's resident memory now, MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(
    run_dir: str, flags: list[str], threads: int | None, *, name: str = "model"
) -> tuple[subprocess.Popen, str]:
    """`aiayn serve NAME=RUN_DIR FLAGS` on a free port, once it answers /health; its URL."""
    port = free_port()
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "aiayn", "serve", f"{name}={run_dir}", "--port", str(port)]
    process = subprocess.Popen(
        [*command, *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not start:\n{process.communicate()[1].decode()[-2000:]}")


async def load(
    url: str, sentences: list[str], requests: int, concurrency: int, beam: int
) -> tuple[list[float], dict[int, int], dict[int, str], float]:
    """Send `requests` requests, `concurrency` at a time; latencies (s), status counts, the
    translation of each sentence index, wall time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    outputs: dict[int, str] = {}
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def client_loop() -> None:
            for i in todo:
                index = i % len(sentences)
                body = {"text": sentences[index], "beam": beam}
                start = time.perf_counter()
                response = await client.post("/v1/translate", json=body)
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    outputs[index] = response.json()["translations"][0]

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, statuses, outputs, wall


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def run_mode(
    name: str, flags: list[str], args: argparse.Namespace, sentences: list[str]
) -> tuple[dict, dict]:
    process, url = start_server(args.run_dir, flags, args.threads)
    try:
        warm = min(len(sentences), args.concurrency)
        asyncio.run(load(url, sentences, warm, args.concurrency, args.beam))  # warm-up
        before = rss_mb(process.pid)
        start_stats = httpx.get(f"{url}/health").json()["worker"]
        latencies, statuses, outputs, wall = asyncio.run(
            load(url, sentences, args.requests, args.concurrency, args.beam)
        )
        after = rss_mb(process.pid)
        stats = httpx.get(f"{url}/health").json()["worker"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    ok = statuses.get(200, 0)
    batches = stats["batches"] - start_stats["batches"]
    row = {
        "mode": name,
        "flags": " ".join(flags),
        "requests": args.requests,
        "ok": ok,
        "rejected_503": statuses.get(503, 0),
        "errors": sum(n for status, n in statuses.items() if status not in (200, 503)),
        "requests_per_s": round(ok / wall, 2),
        "latency_ms_p50": round(1000 * percentile(latencies, 50), 1),
        "latency_ms_p95": round(1000 * percentile(latencies, 95), 1),
        "latency_ms_p99": round(1000 * percentile(latencies, 99), 1),
        "server_rss_mb_before": round(before, 1),
        "server_rss_mb_after": round(after, 1),
        "batches": batches,
        "requests_per_batch": round(
            (stats["requests"] - start_stats["requests"]) / max(1, batches), 2
        ),
        "seconds": round(wall, 2),
    }
    return row, outputs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--source", help="sentences, one per line (default: Multi30k test2016 de)")
    parser.add_argument("--data-dir", help="data root for the default sentences ($AIAYN_DATA)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server")
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args(argv)
    source = args.source or multi30k_files("test2016", "de", args.data_dir)
    sentences = [s for s in read_lines(source) if s.strip()]
    rows, outputs = [], []
    for name, flags in (("dynamic batching", []), ("one at a time", ["--max-batch-tokens", "1"])):
        row, translated = run_mode(name, flags, args, sentences)
        rows.append(row)
        outputs.append(translated)
    same = outputs[0] == outputs[1]
    result = {
        "benchmark": "serve",
        "machine": machine(),
        "run_dir": Path(args.run_dir).name,
        "sentences": str(source) if args.source else "multi30k test2016 de",
        "server_threads": args.threads or "torch's default",
        "concurrency": args.concurrency,
        "beam": args.beam,
        "rows": rows,
        "batching_speedup": round(
            rows[0]["requests_per_s"] / max(rows[1]["requests_per_s"], 1e-9), 2
        ),
        "same_translations": same,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        latency = "/".join(str(row[f"latency_ms_p{q}"]) for q in (50, 95, 99))
        print(
            f"{row['mode']:>17}: {row['requests_per_s']:7.2f} req/s, latency p50/p95/p99 "
            f"{latency} ms, {row['errors']} errors, {row['rejected_503']} x 503, "
            f"{row['requests_per_batch']} requests/batch, server {row['server_rss_mb_before']}"
            f" -> {row['server_rss_mb_after']} MB",
            file=sys.stderr,
        )
    print(
        f"batching speedup {result['batching_speedup']}x; same translations: {same}",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
