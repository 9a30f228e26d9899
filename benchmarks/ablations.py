"""Table 3 of the paper in miniature: variations of the Multi30k recipe, each trained for the
same fixed budget, scored as the paper scores its rows (parameters, validation perplexity,
validation and test BLEU), plus the choices tutorials disagree on.

    python -m benchmarks.ablations [--rows base A-heads-1 ...] [--seeds 0 1] [--runs-dir DIR]
        [--results docs/ablations.json] [--page docs/ablations.md] [--render-only]

Each row is `configs/multi30k-de-en.yaml` with `BUDGET` and the row's `--set` overrides, trained
into RUNS_DIR/<row>-s<seed> (resumed if it is there), its last 5 checkpoints averaged (§6.1),
then validation and test2016 BLEU with beam 4, alpha 0.6. A finished row is appended to the
results file at once, so the command resumes row by row (and a row mid-training resumes at its
last checkpoint). Without `--rows`: every row at seed 0, the base at seeds 0 and 1, then seed 1
for each row whose test BLEU is within twice the base's seed spread of the base (`needs_seed`),
then the decoding grid on the base (`--decoding-only`: the grid alone, on the trained base-s0).
`--render-only` rewrites the page's tables and the curves plot from the results file.

The page's tables hold runs in bf16 (`TABLE_PRECISION`: a CPU with native bf16). On a machine
where `precision: auto` resolves to fp32 (no native bf16), runs go to `<row>-s<seed>-fp32`, are
weighed by the spread rule against the fp32 base only, and fill the replicates table: each one
against the base at the same seed and precision.

The page keeps its prose: only the text between `<!-- table:GROUP -->` and `<!-- /table -->`
markers is replaced.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BASE_CONFIG = "configs/multi30k-de-en.yaml"
BUDGET = (
    "train.max_steps=1200",  # ~22 minutes of updates on a 2-core AVX512-BF16 CPU
    "train.eval_each_epoch=false",
    "train.eval_every=200",  # the validation curves of the plot
    "train.save_every=100",
    "train.keep_last=5",  # averaged: the last 500 updates
)
"""What every row shares beyond the base config: the same number of updates."""
DECODE = {"beam": 4, "alpha": 0.6}
"""How every trained row is scored (§6.1)."""
DECODING_GRID = [(beam, alpha) for beam in (1, 4, 8) for alpha in (0.0, 0.6, 1.0)]
"""Beam sizes and length penalties tried on the base model (no training)."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a change to the base recipe."""

    name: str
    group: str
    label: str
    overrides: tuple[str, ...] = ()


ROWS = [
    Row(
        "base",
        "base",
        "3+3 layers, d_model 256, 4 heads (d_k 64), d_ff 1024, P_drop 0.2, "
        "eps_ls 0.1, post-norm, sinusoids, tied, warm-up 1000",
    ),  # fmt: skip
    Row("A-heads-1", "A", "1 head, d_k = d_v = 256", ("model.n_heads=1",)),
    Row("A-heads-8", "A", "8 heads, d_k = d_v = 32", ("model.n_heads=8",)),
    Row("B-dk-16", "B", "d_k 16 (d_v 64)", ("model.d_k=16",)),
    Row("B-dk-32", "B", "d_k 32 (d_v 64)", ("model.d_k=32",)),
    Row("C-layers-2", "C", "2+2 layers", ("model.n_encoder_layers=2", "model.n_decoder_layers=2")),
    Row("C-layers-4", "C", "4+4 layers", ("model.n_encoder_layers=4", "model.n_decoder_layers=4")),
    Row("C-dmodel-128", "C", "d_model 128 (d_k 32)", ("model.d_model=128",)),
    Row("C-dmodel-384", "C", "d_model 384 (d_k 96)", ("model.d_model=384",)),
    Row("C-dff-512", "C", "d_ff 512", ("model.d_ff=512",)),
    Row("C-dff-2048", "C", "d_ff 2048", ("model.d_ff=2048",)),
    Row("D-dropout-0", "D", "P_drop 0", ("model.dropout=0.0",)),
    Row("D-dropout-0.1", "D", "P_drop 0.1", ("model.dropout=0.1",)),
    Row("D-dropout-0.3", "D", "P_drop 0.3", ("model.dropout=0.3",)),
    Row("D-ls-0", "D", "eps_ls 0", ("train.label_smoothing=0.0",)),
    Row("D-ls-0.2", "D", "eps_ls 0.2", ("train.label_smoothing=0.2",)),
    Row("E-learned", "E", "learned positions", ("model.positions=learned",)),
    Row("E-rope", "E", "rotary positions", ("model.positions=rope",)),
    Row(
        "norm-pre",
        "norm",
        "pre-norm (GPT-2, the Annotated Transformer's code)",
        ("model.norm_first=true",),
    ),  # fmt: skip
    Row(
        "tying-off",
        "tying",
        "no weight tying (3 matrices)",
        ("model.share_embeddings=false", "model.tie_output=false"),
    ),  # fmt: skip
    Row("warmup-400", "warmup", "warm-up 400", ("train.warmup_steps=400",)),
    Row("warmup-4000", "warmup", "warm-up 4000 (the paper's)", ("train.warmup_steps=4000",)),
]
GROUPS = {
    "base": "The base row",
    "A": "(A) attention heads at constant compute",
    "B": "(B) attention key size",
    "C": "(C) model size",
    "D": "(D) regularisation",
    "E": "(E) positions",
    "norm": "Post-norm (the paper) or pre-norm",
    "tying": "Weight tying (§3.4)",
    "warmup": "Warm-up (Eq. 3)",
}


TABLE_PRECISION = "bf16"
"""The precision of the page's main tables (trained on a CPU with native bf16). A run in another
precision (`auto` gives fp32 on a CPU without native bf16) is keyed and stored apart, and the
page compares it only with the base run at the same seed and precision (`replicate_table`)."""


def row_key(name: str, seed: int, precision: str = TABLE_PRECISION) -> str:
    """`A-heads-1-s0`; `A-heads-1-s1-fp32` for a run in a precision other than the table's."""
    return f"{name}-s{seed}" + ("" if precision == TABLE_PRECISION else f"-{precision}")


def precision_here(config) -> str:
    """What `train.precision` resolves to on this machine (`auto`: bf16 or fp32), as the trainer
    resolves it: which runs this machine adds to."""
    from aiayn.machine import describe_machine, resolve_precision
    from aiayn.train.distributed import resolve_device

    machine = describe_machine(resolve_device(config.train.device))
    return resolve_precision(config.train.precision, machine)[0]


def runs_of(results: dict, name: str, precision: str = TABLE_PRECISION) -> list[dict]:
    """The finished runs of one row in one precision, in seed order."""
    runs = [r for r in results["rows"].values() if r["row"] == name]
    return sorted((r for r in runs if r["precision"] == precision), key=lambda r: r["seed"])


def read_results(path: Path) -> dict:
    """`{"rows": {key: result}, "decoding": [...]}`; empty when the file is not there."""
    if not path.exists():
        return {"rows": {}, "decoding": []}
    return json.loads(path.read_text())


def write_results(path: Path, results: dict) -> None:
    from aiayn.files import atomic_write

    atomic_write(path, json.dumps(results, indent=1) + "\n")


def train_row(
    row: Row,
    seed: int,
    runs_dir: Path,
    *,
    base_config: str = BASE_CONFIG,
    budget: Sequence[str] = BUDGET,
    extra: Sequence[str] = (),
) -> dict:
    """Train one row (resuming what is there), average its last 5 checkpoints, score it.
    `extra` overrides come last (the tests shrink the model with them)."""
    import aiayn
    from aiayn.config import load_config
    from aiayn.data.splits import SPLITS, TEST_SPLIT
    from aiayn.train.average import average_checkpoints
    from aiayn.train.log import read_metrics
    from aiayn.train.loop import train

    overrides = [*budget, *row.overrides, f"train.seed={seed}", *extra]
    config = load_config(base_config, overrides)
    precision = precision_here(config)
    run_dir = runs_dir / row_key(row.name, seed, precision)
    result = train(config, run_dir=run_dir, resume=True, progress=False)
    if result.stopped_by:  # saved; a score of a row cut short would be wrong
        raise SystemExit(f"{run_dir} stopped by {result.stopped_by}; run again to resume")
    average_checkpoints(run_dir, last=5)
    model = aiayn.load(run_dir, "averaged")
    val_split, test_split = SPLITS[config.data.dataset][1], TEST_SPLIT[config.data.dataset]
    val = model.evaluate(val_split, **DECODE)
    test = model.evaluate(test_split, **DECODE)
    metrics = read_metrics(run_dir)
    valid = [r for r in metrics if r["kind"] == "valid"]
    trains = [r for r in metrics if r["kind"] == "train"]
    last_train = trains[-1]
    machine = [r for r in metrics if r["kind"] == "machine"]
    return {
        "row": row.name,
        "group": row.group,
        "seed": seed,
        "precision": precision,
        "machine": machine[-1]["summary"],  # the last: where it finished, if it was resumed
        "overrides": overrides,
        "parameters": model.parameters,
        "val_ppl": valid[-1]["ppl"],
        "val_bleu": val.bleu.score,
        "test_bleu": test.bleu.score,
        "bleu_signature": test.bleu.signature,
        # the median of the logged windows: a burst of other work on the machine moves it less
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in trains),
        "train_minutes": last_train["seconds"] / 60,
        "curve": [[r["step"], r["bleu"]] for r in valid if "bleu" in r],
    }


def decoding_grid(run_dir: Path, grid: Iterable[tuple[int, float]] = DECODING_GRID) -> list[dict]:
    """Validation and test BLEU of one trained run (averaged and last checkpoint) for each beam
    size and length penalty."""
    import aiayn
    from aiayn.data.splits import SPLITS, TEST_SPLIT

    rows = []
    for checkpoint in ("averaged", "last"):
        model = aiayn.load(run_dir, checkpoint)
        dataset = model.config.data.dataset
        for beam, alpha in grid:
            if checkpoint == "last" and (beam, alpha) != (DECODE["beam"], DECODE["alpha"]):
                continue  # averaging on/off is compared at the table's decoding only
            scores = {
                name: model.evaluate(split, beam=beam, alpha=alpha).bleu.score
                for name, split in (("val", SPLITS[dataset][1]), ("test", TEST_SPLIT[dataset]))
            }
            rows.append({"checkpoint": checkpoint, "beam": beam, "alpha": alpha,
                         "val_bleu": scores["val"], "test_bleu": scores["test"]})  # fmt: skip
    return rows


def mean(runs: list[dict], key: str = "test_bleu") -> float:
    """One field averaged over a row's runs (its seeds)."""
    return sum(r[key] for r in runs) / len(runs)


def seed_spread(results: dict, precision: str = TABLE_PRECISION) -> float | None:
    """The base row's test BLEU spread over its seeds (max - min) in one precision; None with
    fewer than two."""
    base = [r["test_bleu"] for r in runs_of(results, "base", precision)]
    return max(base) - min(base) if len(base) >= 2 else None


def needs_seed(results: dict, name: str, precision: str = TABLE_PRECISION) -> bool:
    """A row is run at a second seed when its test BLEU differs from the base's mean by less
    than twice the base's seed spread (the issue's rule), and it has only one seed; runs of one
    precision are weighed against the base in that precision only."""
    spread = seed_spread(results, precision)
    runs = runs_of(results, name, precision)
    if spread is None or len(runs) != 1 or name == "base":
        return False
    return abs(runs[0]["test_bleu"] - mean(runs_of(results, "base", precision))) < 2 * spread


def other_precisions(results: dict) -> list[str]:
    return sorted({r["precision"] for r in results["rows"].values()} - {TABLE_PRECISION})


def table(results: dict, group: str) -> str:
    """Markdown table of one group (the base row first) in the table's precision, seeds
    averaged, with their count."""
    names = ["base"] + [row.name for row in ROWS if row.group == group and row.name != "base"]
    lines = [
        "| row | change | parameters | val ppl | val BLEU | test2016 BLEU | tokens/s | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {row.name: row.label for row in ROWS}
    for name in names:
        runs = runs_of(results, name)
        if not runs:
            lines.append(f"| {name} | {labels[name]} | not run yet | | | | | |")
            continue
        test = f"{mean(runs):.2f}"
        if len(runs) > 1:
            test += f" ({min(r['test_bleu'] for r in runs):.2f}-"
            test += f"{max(r['test_bleu'] for r in runs):.2f})"
        seeds = str(len(runs))
        if needs_seed(results, name):
            others = [p for p in other_precisions(results) if replicate_delta(results, name, p)]
            seeds += (
                f" (close: {others[0]} replicate below)" if others else " (close: 2nd seed due)"
            )
        change = labels[name] if name != "base" or group == "base" else "base"
        ppl, val, speed = (mean(runs, key) for key in ("val_ppl", "val_bleu", "tokens_per_second"))
        lines.append(
            f"| {name} | {change} | {runs[0]['parameters'] / 1e6:.2f}M | {ppl:.2f} | {val:.2f} | "
            f"{test} | {speed:,.0f} | {seeds} |"
        )
    return "\n".join(lines)


def replicate_delta(results: dict, name: str, precision: str) -> list[tuple[int, float]]:
    """(seed, test BLEU of the row minus the base's at that seed) for each seed where both ran
    in `precision`: a difference from the base measured apart from the table's precision."""
    base = {r["seed"]: r["test_bleu"] for r in runs_of(results, "base", precision)}
    runs = runs_of(results, name, precision)
    return [(r["seed"], r["test_bleu"] - base[r["seed"]]) for r in runs if r["seed"] in base]


def replicate_table(results: dict) -> str:
    """The runs in precisions other than the table's, each row's test BLEU against the base's at
    the same seed and precision, beside the row's difference from the base in the main table."""
    lines = [
        "| row | seed | precision | val ppl | val BLEU | test2016 BLEU | test vs base, same seed "
        "and precision | test vs base, main table | tokens/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = runs_of(results, "base")
    for precision in other_precisions(results):
        for row in ROWS:
            deltas = dict(replicate_delta(results, row.name, precision))
            main = runs_of(results, row.name)
            in_main = f"{mean(main) - mean(base):+.2f}" if main and base else ""
            for r in runs_of(results, row.name, precision):
                if row.name == "base":  # the anchor of the others; its own difference is 0
                    delta, in_main = "(the anchor)", ""
                else:
                    delta = f"{deltas[r['seed']]:+.2f}" if r["seed"] in deltas else "base not run"
                lines.append(
                    f"| {row.name} | {r['seed']} | {precision} | {r['val_ppl']:.2f} | "
                    f"{r['val_bleu']:.2f} | "
                    f"{r['test_bleu']:.2f} | {delta} | {in_main} | {r['tokens_per_second']:,.0f} |"
                )
    if len(lines) == 2:
        lines.append("| none run yet | | | | | | | | |")
    return "\n".join(lines)


def decoding_table(results: dict) -> str:
    lines = [
        "| checkpoint | beam | alpha | val BLEU | test2016 BLEU |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results["decoding"]:
        lines.append(f"| {r['checkpoint']} | {r['beam']} | {r['alpha']} | {r['val_bleu']:.2f} | "
                     f"{r['test_bleu']:.2f} |")  # fmt: skip
    if not results["decoding"]:
        lines.append("| not run yet | | | | |")
    return "\n".join(lines)


MARKER = re.compile(r"(<!-- table:(\w+) -->\n).*?(<!-- /table -->)", re.DOTALL)


def render(page: Path, results: dict) -> str:
    """The page with every `<!-- table:GROUP -->` block (GROUP in GROUPS, `decoding` or
    `replicates`)
    refilled from `results`; the prose around the blocks is kept."""

    def fill(match: re.Match) -> str:
        group = match.group(2)
        if group == "decoding":
            body = decoding_table(results)
        elif group == "replicates":
            body = replicate_table(results)
        else:
            body = table(results, group)
        return f"{match.group(1)}{body}\n{match.group(3)}"

    return MARKER.sub(fill, page.read_text())


def plot_curves(results: dict, out: Path) -> Path:
    """Validation BLEU (greedy, every 200 updates) against updates: one panel per group, the
    base row in black in each, seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUPS if g != "base"]
    fig, axes = plt.subplots(2, (len(groups) + 1) // 2, figsize=(16, 7), sharey=True)
    runs = {name: r[0] for name in {row.name for row in ROWS} if (r := runs_of(results, name))}
    for ax, group in zip(axes.flat, groups, strict=False):
        for name in ["base"] + [row.name for row in ROWS if row.group == group]:
            if name in runs and runs[name]["curve"]:
                steps, bleu = zip(*runs[name]["curve"], strict=True)
                style = dict(color="black", linewidth=2) if name == "base" else {}
                ax.plot(steps, bleu, marker=".", label=name, **style)
        ax.set_title(GROUPS[group], fontsize=9)
        ax.set_xlabel("update")
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation BLEU (greedy)")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def plan(
    results: dict,
    names: Sequence[str] | None,
    seeds: Sequence[int],
    precision: str = TABLE_PRECISION,
) -> list[tuple[Row, int]]:
    """The (row, seed) pairs still to train in `precision`: the named rows at `seeds`, or the
    default order (every row at seed 0 with the base at 0 and 1, then the second seeds that are
    due in that precision)."""
    by_name = {row.name: row for row in ROWS}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; choose from {list(by_name)}")
        wanted = [(by_name[n], s) for n in names for s in seeds]
    else:
        wanted = [(by_name["base"], 0), (by_name["base"], 1)]
        wanted += [(row, 0) for row in ROWS if row.name != "base"]
        wanted += [(row, 1) for row in ROWS if needs_seed(results, row.name, precision)]
    done = results["rows"]
    return [(row, s) for row, s in wanted if row_key(row.name, s, precision) not in done]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", help="row names (default: the whole table)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="with --rows")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--results", type=Path, default=Path("docs/ablations.json"))
    parser.add_argument("--page", type=Path, default=Path("docs/ablations.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/ablations/curves.png"))
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--no-decoding", action="store_true", help="skip the decoding grid")
    parser.add_argument(
        "--decoding-only", action="store_true", help="only the decoding grid on base-s0, now"
    )
    args = parser.parse_args(argv)
    results = read_results(args.results)
    if args.decoding_only:
        results["decoding"] = decoding_grid(args.runs_dir / row_key("base", 0))
        write_results(args.results, results)
    elif not args.render_only:
        from aiayn.config import load_config

        precision = precision_here(load_config(BASE_CONFIG))
        while todo := plan(results, args.rows, args.seeds, precision):
            row, seed = todo[0]
            key = row_key(row.name, seed, precision)
            print(f"== {key}: {' '.join(row.overrides) or 'base'}", flush=True)
            results["rows"][key] = train_row(row, seed, args.runs_dir)
            write_results(args.results, results)
        base = args.runs_dir / row_key("base", 0)
        if not args.rows and not args.no_decoding and not results["decoding"] and base.exists():
            print("== decoding grid on base-s0", flush=True)
            results["decoding"] = decoding_grid(base)
            write_results(args.results, results)
    if args.page.exists():
        args.page.write_text(render(args.page, results))
    if results["rows"]:
        plot_curves(results, args.plot)
    print(f"{len(results['rows'])} rows in {args.results}; page {args.page}")


if __name__ == "__main__":
    main()
