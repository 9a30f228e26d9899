"""Data at scale: binarize generated corpora of growing size, then start training on them, and
compare with the in-memory text path on the same pairs.

    python -m benchmarks.data_scale [--sizes 500000 1000000 5000000] [--work DIR]
        [--in-memory-timeout 900] [--out docs/data_scale.json]

The corpus: Multi30k's and Tatoeba deu-eng's German-English training pairs resampled and
perturbed (a word dropped, repeated or swapped with its neighbour, a number appended; seeded),
written as .gz files. One BPE vocabulary (8k) is learned on a sample first. For each size:

- `aiayn data binarize` with 2 workers: wall time, peak memory of the process tree, disk size;
- `aiayn train` on the shards (`dataset: binarized`) and on the .gz files (`dataset: parallel`,
  tokenized into Python lists at start-up), with a tiny model and 2 updates: the seconds until
  the first update is logged (start-up: reading, filtering, batching) and peak memory.

Memory is sampled from /proc every 50 ms: `anon` is what the processes own (heap, tensors),
`rss` adds mapped file pages (the shards' pages the kernel can drop and read again). A run
past its timeout is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.harness import ROOT, machine


def source_pairs(data: Path) -> list[tuple[str, str]]:
    """The pool the corpus is drawn from: Multi30k train and Tatoeba deu-eng (de, en)."""
    from aiayn.data.corpus import read_parallel
    from aiayn.data.tatoeba import read_tatoeba, tatoeba_file

    multi30k = data / "multi30k"
    pairs = read_parallel(multi30k / "train.de.gz", multi30k / "train.en.gz")
    pairs += [(de, en) for en, de in read_tatoeba(tatoeba_file("de", data))]
    return pairs


def perturbed(pairs: list[tuple[str, str]], seed: int = 0) -> Iterator[tuple[str, str]]:
    """Pairs drawn from `pairs` with replacement, each side changed a little: a new corpus of
    the same kind of text, as long as wanted."""
    rng = random.Random(seed)

    def change(sentence: str) -> str:
        words = sentence.split()
        if len(words) > 2:
            i, what = rng.randrange(len(words) - 1), rng.random()
            if what < 0.25:
                del words[i]
            elif what < 0.5:
                words.insert(i, words[i])
            elif what < 0.75:
                words[i], words[i + 1] = words[i + 1], words[i]
        if rng.random() < 0.3:
            words.append(str(rng.randrange(1000)))
        return " ".join(words)

    while True:
        de, en = pairs[rng.randrange(len(pairs))]
        yield change(de), change(en)


def write_corpora(pairs: list[tuple[str, str]], sizes: list[int], work: Path) -> dict[int, Path]:
    """`work/corpus-N/train.{de,en}.gz` for each size N (the first N pairs of one stream)."""
    folders = {n: work / f"corpus-{n}" for n in sizes}
    if all((f / "train.en.gz").is_file() for f in folders.values()):
        return folders
    outs = {}
    for n, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        outs[n] = [gzip.open(folder / f"train.{lang}.gz.tmp", "wt", compresslevel=1)
                   for lang in ("de", "en")]  # fmt: skip
    for i, (de, en) in enumerate(perturbed(pairs)):
        if i >= max(sizes):
            break
        for n, (out_de, out_en) in outs.items():
            if i < n:
                out_de.write(de + "\n")
                out_en.write(en + "\n")
    for n, files in outs.items():
        for file, lang in zip(files, ("de", "en"), strict=True):
            file.close()
            os.replace(folders[n] / f"train.{lang}.gz.tmp", folders[n] / f"train.{lang}.gz")
    return folders


def tree_memory(pid: int) -> tuple[float, float]:
    """(anonymous, resident) MB of process `pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    anon = rss = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            continue
        fields = {line.split(":")[0]: line.split()[1] for line in status if "kB" in line}
        anon += int(fields.get("RssAnon", 0)) / 1024
        rss += int(fields.get("VmRSS", 0)) / 1024
    return anon, rss


def measured(
    command: list[str], *, timeout: float, ready: Callable[[], bool] | None = None
) -> dict:
    """Run `command`, sampling its process tree's memory; the seconds until `ready()` first
    held (when given), the wall time, peak anonymous and resident MB, and whether it finished
    in `timeout` seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    peak_anon = peak_rss = 0.0
    ready_s = None
    while process.poll() is None:
        elapsed = time.perf_counter() - start
        if elapsed > timeout:
            process.kill()
            break
        anon, rss = tree_memory(process.pid)
        peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
        if ready_s is None and ready is not None and ready():
            ready_s = elapsed
        time.sleep(0.05)
    stderr = process.communicate()[1]
    finished = process.returncode == 0
    if not finished and process.returncode != -9:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "ready_seconds": ready_s,
            "peak_anon_mb": round(peak_anon), "peak_rss_mb": round(peak_rss),
            "finished": finished}  # fmt: skip


def aiayn(*args: str) -> list[str]:
    return [sys.executable, "-m", "aiayn", *args]


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def train_config(work: Path, name: str, data: dict) -> Path:
    """A tiny model (its weights do not matter here) for 2 updates, no checkpoints between."""
    import yaml

    config = {
        "model": {"d_model": 64, "n_heads": 2, "d_ff": 128, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "max_len": 256},
        "data": {"src": "de", "tgt": "en", "max_len": 256, "max_tokens": 4096, **data},
        "train": {"max_steps": 2, "log_every": 1, "eval_every": 0, "eval_each_epoch": False,
                  "save_every": 0, "bleu": False, "precision": "fp32", "device": "cpu"},
    }  # fmt: skip
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def first_update_logged(run_dir: Path) -> Callable[[], bool]:
    def ready() -> bool:
        log = run_dir / "metrics.jsonl"
        return log.is_file() and '"kind": "train"' in log.read_text()

    return ready


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500_000, 1_000_000, 5_000_000])
    parser.add_argument("--work", type=Path, default=Path("runs/data_scale"))
    parser.add_argument("--data", type=Path, default=os.environ.get("AIAYN_DATA"))
    parser.add_argument("--in-memory-timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=Path("docs/data_scale.json"))
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("give --data or set AIAYN_DATA (Multi30k and Tatoeba deu-eng)")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folders = write_corpora(source_pairs(args.data), sorted(args.sizes), work)
    print(f"corpora written in {time.perf_counter() - started:.0f} s", flush=True)
    smallest = folders[min(args.sizes)]
    tokenizer = work / "tokenizer"
    if not (tokenizer / "tokenizer.model").is_file():
        subprocess.run(aiayn("data", "tokenizer", "--files", str(smallest / "train.de.gz"),
                             str(smallest / "train.en.gz"), "-o", str(tokenizer),
                             "--vocab-size", "8000", "--max-sentences", "400000"),
                       cwd=ROOT, check=True)  # fmt: skip
    valid = [args.data / "multi30k" / f"val.{lang}.gz" for lang in ("de", "en")]
    rows = []
    for n in sorted(args.sizes):
        folder, shards = folders[n], work / f"shards-{n}"
        row: dict = {"pairs": n, "corpus_gz_mb": round(folder_mb(folder), 1)}
        if not (shards / "binarized.json").is_file():
            command = aiayn("data", "binarize", "--source", str(folder / "train.de.gz"),
                            "--target", str(folder / "train.en.gz"), "--tokenizer",
                            str(tokenizer), "-o", str(shards), "--workers", "2")  # fmt: skip
            row["binarize"] = measured(command, timeout=3600)
            subprocess.run(aiayn("data", "binarize", "--source", str(valid[0]), "--target",
                                 str(valid[1]), "--tokenizer", str(tokenizer), "-o",
                                 str(shards), "--split", "valid"),
                           cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        row["shards_mb"] = round(folder_mb(shards), 1)
        text = {"dataset": "parallel", "valid_files": [str(v) for v in valid],
                "train_files": [str(folder / f"train.{lang}.gz") for lang in ("de", "en")],
                "tokenizer": str(tokenizer / "tokenizer.model")}  # fmt: skip
        for name, data, timeout in (
            ("binarized", {"dataset": "binarized", "data_dir": str(shards)}, 3600),
            ("in_memory", text, args.in_memory_timeout),
        ):
            run_dir = work / f"run-{name}-{n}"
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            config = train_config(work, f"{name}-{n}", data)
            command = aiayn("train", str(config), "--run-dir", str(run_dir), "--no-progress")
            row[f"train_{name}"] = measured(
                command, timeout=timeout, ready=first_update_logged(run_dir)
            )
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"machine": machine(), "sizes": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
