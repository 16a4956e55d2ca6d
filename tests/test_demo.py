"""`lmforge demo --quick`, run as a user runs it: the label-efficiency report, its determinism, and the
refusals around its output folder."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def demo(*args):
    return subprocess.run([sys.executable, "-m", "lmforge", "demo", "--quiet", *args], capture_output=True,
                          text=True, timeout=900)


def accuracies(summary: dict) -> dict:
    return {arm["name"]: {size: point["seeds"] for size, point in arm["points"].items()} for arm in summary["arms"]}


def test_quick_demo_writes_a_sane_report(tmp_path):
    out = tmp_path / "demo"
    result = demo("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [a["name"] for a in summary["arms"]] == ["pretrained here (MLM)", "same architecture, from scratch"]
    assert summary["sizes"] == [4, 16, 64]
    for arm in summary["arms"]:
        for size in ("4", "16", "64"):
            point = arm["points"][size]
            assert len(point["seeds"]) == summary["budget"]["seeds"] >= 2
            assert 0 <= point["min"] <= point["mean"] <= point["max"] <= 1
        assert arm["wall_s"] > 0 and arm["energy_wh"] > 0
    versus = summary["comparisons"]["pretrained here vs from scratch"]
    assert {c["verdict"] for c in versus.values()} <= {"helped", "no clear difference", "hurt"}
    assert all(0 <= c["p_value"] <= 1 and c["low"] <= c["difference"] <= c["high"] for c in versus.values())
    pretrain = summary["phases"]["pretrain"]
    assert pretrain["steps"] == summary["budget"]["pretrain_steps"] and pretrain["co2_g"] > 0
    assert pretrain["recipe"] == "small-budget" and pretrain["unigram_entropy"] > 0
    evals = [p["eval_loss"] for p in pretrain["curve"] if p.get("eval_loss") is not None]
    assert evals[-1] < evals[0]  # masked-LM loss fell
    html = (out / "report.html").read_text()
    assert "label_efficiency.png" in html and "<table>" in html and "unigram entropy" in html
    assert (out / "label_efficiency.png").stat().st_size > 5000 and (out / "pretraining.png").is_file()
    assert "lmforge classify" in result.stdout and "paired test" in result.stdout
    # a finished demo is not overwritten without --overwrite
    again = demo("--quick", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr


SMALL_RUN = """
import sys, torch
from lmforge.demo.run import DemoBudget, run_demo
torch.set_num_threads(1)
budget = DemoBudget(vocab_size=1000, d_model=32, n_layers=1, pretrain_steps=60, seeds=2, batch_size=16,
                    seq_len=32, epochs=1, min_steps=4)
run_demo(sys.argv[1], budget=budget, sizes=(2, 4), with_minilm=False, say=lambda line: None, progress=False)
"""


def test_two_runs_give_the_same_numbers(tmp_path):
    """Determinism end to end (tokenizer, shards, pretraining, every arm, the paired tests), each run in a
    fresh interpreter (another hash seed), on a reduced budget through run_demo's own parameters. (The MiniLM
    arm's second process gives what the same runs give in this one: tests/test_label_efficiency.py.)"""
    summaries = []
    for name in ("first", "second"):
        result = subprocess.run([sys.executable, "-c", SMALL_RUN, str(tmp_path / name)], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    first, second = summaries
    assert len(first["arms"]) == 2 and first["sizes"] == [2, 4]
    assert accuracies(second) == accuracies(first)
    assert second["phases"]["pretrain"]["eval_loss"] == first["phases"]["pretrain"]["eval_loss"]
    assert second["comparisons"] == first["comparisons"]
    assert (tmp_path / "first" / "shards").is_dir()
    tokenizers = [(tmp_path / name / "pretrain" / "final" / "tokenizer.json").read_bytes() for name in ("first", "second")]
    assert tokenizers[0] == tokenizers[1]


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = demo("--quick", "--out", str(tmp_path))
    assert result.returncode == 2 and "not a demo folder" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_the_verdict_names_the_paired_result_at_every_size_and_the_loss_against_the_entropy():
    from lmforge.demo.run import verdict

    def comparison(verdict_word: str, difference: float) -> dict:
        return {"verdict": verdict_word, "difference": difference, "low": difference - 0.02, "high": difference + 0.02,
                "confidence": 0.95, "p_value": 0.001}

    summary = {"sizes": [4, 16], "task": {"test": 459},
               "phases": {"pretrain": {"wall_s": 10.0, "energy_wh": 0.1, "co2_g": 0.01, "eval_loss": 4.9,
                                       "unigram_entropy": 6.3}},
               "comparisons": {"pretrained here vs from scratch": {"4": comparison("helped", 0.2),
                                                                   "16": comparison("helped", 0.1)}}}
    text = verdict(summary)
    assert text.startswith("Pretraining helped at every size") and "+20.0 points" in text and "1.40 below" in text
    summary["comparisons"]["pretrained here vs from scratch"]["16"] = comparison("no clear difference", 0.0)
    summary["phases"]["pretrain"]["eval_loss"] = 6.1
    text = verdict(summary)
    assert text.startswith("Pretraining's effect depends on the size") and "little more than word counts" in text
