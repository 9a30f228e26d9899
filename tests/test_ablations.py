"""The ablation runner (benchmarks/ablations.py): a row trains, averages and scores; the plan
resumes row by row and adds second seeds by the issue's rule; the page keeps its prose while
its tables are refilled; the curves plot is drawn."""

from __future__ import annotations

import json

import pytest

from aiayn.config import save_config
from benchmarks import ablations
from benchmarks.ablations import ROWS, Row, needs_seed, plan, render, row_key, train_row
from tests.train.tiny_data import tiny_config, write_corpus

TINY_BUDGET = ("train.max_steps=20", "train.eval_every=10", "train.save_every=5",
               "train.keep_last=5", "train.bleu=true", "train.eval_each_epoch=false")  # fmt: skip


def fake_result(name: str, seed: int, bleu: float, precision: str = "bf16") -> dict:
    group = next(r.group for r in ROWS if r.name == name)
    return {"row": name, "group": group, "seed": seed, "precision": precision,
            "parameters": 1_000_000, "val_ppl": 5.0,
            "val_bleu": bleu + 1, "test_bleu": bleu, "tokens_per_second": 1000.0,
            "curve": [[10, bleu - 5], [20, bleu]]}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablation")
    corpus = write_corpus(folder)
    return save_config(tiny_config(corpus, model={"dropout": 0.0}), folder / "base.yaml")


@pytest.mark.integration
def test_a_row_trains_averages_and_is_scored(tiny_base, tmp_path):
    row = Row("A-heads-1", "A", "1 head", ("model.n_heads=1",))
    result = train_row(row, 0, tmp_path, base_config=str(tiny_base), budget=TINY_BUDGET)
    # the tiny config asks for fp32, not the table's bf16: its run is keyed and stored apart
    assert result["precision"] == "fp32" and "threads" in result["machine"]
    run_dir = tmp_path / row_key("A-heads-1", 0, "fp32")
    assert run_dir.name == "A-heads-1-s0-fp32" and not (tmp_path / "A-heads-1-s0").exists()
    assert (run_dir / "averaged" / "model.safetensors").exists()
    assert result["overrides"][-2:] == ["model.n_heads=1", "train.seed=0"]
    assert [step for step, _ in result["curve"]] == [10, 20]
    assert result["parameters"] > 0 and result["val_ppl"] > 1 and result["tokens_per_second"] > 0
    assert "nrefs:1" in result["bleu_signature"] and 0 <= result["test_bleu"] <= 100
    again = train_row(row, 0, tmp_path, base_config=str(tiny_base), budget=TINY_BUDGET)
    assert again["test_bleu"] == result["test_bleu"]  # finished: resumed, nothing retrained
    grid = ablations.decoding_grid(run_dir, [(1, 0.0), (4, 0.6)])
    assert [(r["checkpoint"], r["beam"]) for r in grid] == [("averaged", 1), ("averaged", 4),
                                                          ("last", 4)]  # fmt: skip


def test_the_plan_resumes_and_adds_second_seeds_by_the_spread_rule():
    results = {"rows": {}, "decoding": []}
    first = plan(results, None, [0])
    assert first[:2] == [(ROWS[0], 0), (ROWS[0], 1)] and len(first) == len(ROWS) + 1
    results["rows"] = {row_key("base", 0): fake_result("base", 0, 30.0),
                       row_key("base", 1): fake_result("base", 1, 31.0),
                       row_key("A-heads-1", 0): fake_result("A-heads-1", 0, 29.0),
                       row_key("A-heads-8", 0): fake_result("A-heads-8", 0, 27.0)}  # fmt: skip
    # base mean 30.5, spread 1.0: heads-1 is 1.5 away (< 2 x spread), heads-8 3.5 (not)
    assert needs_seed(results, "A-heads-1") and not needs_seed(results, "A-heads-8")
    todo = plan(results, None, [0])
    assert (ROWS[1], 1) in todo and all(name != "A-heads-8" or s == 0 for name, s in
                                        ((r.name, s) for r, s in todo))  # fmt: skip
    assert (ROWS[0], 0) not in todo and plan(results, ["A-heads-8"], [0]) == []
    with pytest.raises(ValueError, match="unknown rows"):
        plan(results, ["no-such-row"], [0])


def test_runs_in_another_precision_are_planned_and_weighed_apart_from_the_tables():
    results = {"rows": {row_key("base", 0): fake_result("base", 0, 30.0),
                        row_key("base", 1): fake_result("base", 1, 31.0),
                        row_key("A-heads-1", 0): fake_result("A-heads-1", 0, 29.0)},
               "decoding": []}  # fmt: skip
    # an fp32 machine starts its own table: the bf16 runs are not its runs
    assert plan(results, None, [0], "fp32") == plan({"rows": {}, "decoding": []}, None, [0])
    assert plan(results, ["A-heads-1"], [1], "fp32") == [(ROWS[1], 1)]
    assert row_key("A-heads-1", 1, "fp32") == "A-heads-1-s1-fp32"
    results["rows"]["base-s1-fp32"] = fake_result("base", 1, 33.0, "fp32")
    results["rows"]["A-heads-1-s1-fp32"] = fake_result("A-heads-1", 1, 31.5, "fp32")
    # the fp32 runs move neither the bf16 base's spread nor the row's seed count
    assert ablations.seed_spread(results) == 1.0 and ablations.seed_spread(results, "fp32") is None
    assert needs_seed(results, "A-heads-1") and not needs_seed(results, "A-heads-1", "fp32")
    assert plan(results, ["A-heads-1"], [1], "fp32") == []
    assert ablations.replicate_delta(results, "A-heads-1", "fp32") == [(1, -1.5)]
    tables = ablations.table(results, "A") + "\n" + ablations.replicate_table(results)
    assert "| 30.50 (30.00-31.00) | 1,000 | 2 |" in tables  # the base: its two bf16 seeds only
    assert "| 29.00 | 1,000 | 1 (close: fp32 replicate below) |" in tables
    assert "| base | 1 | fp32 | 5.00 | 34.00 | 33.00 | (the anchor) |  | 1,000 |" in tables
    assert "| A-heads-1 | 1 | fp32 | 5.00 | 32.50 | 31.50 | -1.50 | -1.50 | 1,000 |" in tables


def test_precision_here_is_what_the_trainer_resolves_on_this_machine():
    from aiayn.config import load_config
    from aiayn.machine import describe_machine

    auto = load_config(ablations.BASE_CONFIG, ["train.device=cpu"])
    native = describe_machine("cpu").native_bf16
    assert ablations.precision_here(auto) == ("bf16" if native else "fp32")
    fp32 = load_config(ablations.BASE_CONFIG, ["train.device=cpu", "train.precision=fp32"])
    assert ablations.precision_here(fp32) == "fp32"


def test_render_refills_tables_and_keeps_the_prose(tmp_path):
    results = {"rows": {row_key("base", 0): fake_result("base", 0, 30.0),
                        row_key("base", 1): fake_result("base", 1, 31.0)},
               "decoding": [{"checkpoint": "averaged", "beam": 4, "alpha": 0.6,
                             "val_bleu": 31.5, "test_bleu": 30.2}]}  # fmt: skip
    page = tmp_path / "ablations.md"
    page.write_text("# Title\nProse A.\n<!-- table:A -->\nold\n<!-- /table -->\nProse B.\n"
                    "<!-- table:decoding -->\n<!-- /table -->\n"
                    "<!-- table:replicates -->\n<!-- /table -->\n")  # fmt: skip
    text = render(page, results)
    assert text.startswith("# Title\nProse A.\n<!-- table:A -->\n| row |") and "old" not in text
    assert "| base | base | 1.00M | 5.00 | 31.50 | 30.50 (30.00-31.00) | 1,000 | 2 |" in text
    assert "| A-heads-1 | 1 head, d_k = d_v = 256 | not run yet |" in text
    assert "| averaged | 4 | 0.6 | 31.50 | 30.20 |" in text and "Prose B." in text
    assert "| none run yet |" in text  # no run in another precision
    assert render(tmp_path / "ablations.md", results) == text  # the page's text was not written


def test_main_appends_each_row_as_it_finishes_and_draws_the_plot(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ablations, "precision_here", lambda config: "bf16")

    def fake_train_row(row, seed, runs_dir):
        calls.append(row_key(row.name, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third row
        return fake_result(row.name, seed, 30.0 + len(calls))

    monkeypatch.setattr(ablations, "train_row", fake_train_row)
    out = tmp_path / "results.json"
    args = ["--results", str(out), "--page", str(tmp_path / "none.md"), "--runs-dir",
            str(tmp_path), "--plot", str(tmp_path / "curves.png")]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        ablations.main(args)
    assert set(json.loads(out.read_text())["rows"]) == {"base-s0", "base-s1"}
    calls.clear()
    monkeypatch.setattr(
        ablations,
        "train_row",
        lambda row, seed, runs_dir: (
            calls.append(row_key(row.name, seed)) or fake_result(row.name, seed, 20.0)
        ),
    )
    ablations.main(args)
    assert calls[0] == "A-heads-1-s0" and "base-s0" not in calls  # resumed after the two
    assert (tmp_path / "curves.png").stat().st_size > 0
    # on a machine without native bf16 the same command starts the fp32 runs, keyed apart
    monkeypatch.setattr(ablations, "precision_here", lambda config: "fp32")
    monkeypatch.setattr(
        ablations,
        "train_row",
        lambda row, seed, runs_dir: fake_result(row.name, seed, 20.0, "fp32"),
    )
    ablations.main([*args, "--rows", "base", "--seeds", "1"])
    assert json.loads(out.read_text())["rows"]["base-s1-fp32"]["precision"] == "fp32"
