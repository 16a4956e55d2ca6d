"""`lmforge demo --quick`, run as a user runs it, and the refusals around its output folder."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def demo(*args):
    return subprocess.run([sys.executable, "-m", "lmforge", "demo", "--quiet", *args], capture_output=True,
                          text=True, timeout=900)


def test_quick_demo_writes_a_sane_report(tmp_path):
    out = tmp_path / "demo"
    result = demo("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [a["name"] for a in summary["arms"]][:2] == ["pretrained here (MLM)", "same architecture, from scratch"]
    for arm in summary["arms"]:
        assert 0.0 <= arm["test_accuracy"] <= 1.0 and arm["wall_s"] > 0 and arm["energy_wh"] > 0
    pretrain = summary["phases"]["pretrain"]
    assert pretrain["steps"] == summary["budget"]["pretrain_steps"] and pretrain["co2_g"] > 0
    assert pretrain["eval_loss"] < pretrain["curve"][0]["eval_loss"]  # masked-LM loss fell
    assert summary["verdict"] and "pretraining" in summary["verdict"].lower()
    html = (out / "report.html").read_text()
    assert "<table>" in html and "pretraining.png" in html and (out / "finetuning.png").stat().st_size > 1000
    assert "lmforge classify" in result.stdout
    # a finished demo is not overwritten without --overwrite
    again = demo("--quick", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = demo("--quick", "--out", str(tmp_path))
    assert result.returncode == 2 and "not a demo folder" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_verdict_calls_a_gap_within_test_set_noise_no_clear_difference():
    from lmforge.demo.run import chance_difference, verdict

    def summary(pretrained: float, scratch: float) -> dict:
        arm = lambda acc: {"name": "arm", "test_accuracy": acc, "valid_accuracy": acc, "wall_s": 1.0}
        return {"arms": [arm(pretrained), arm(scratch)], "task": {"labels": list("abcdefgh"), "test": 459, "train": 256},
                "phases": {"pretrain": {"wall_s": 1.0, "energy_wh": 0.1, "co2_g": 0.01}}}

    assert 0.06 < chance_difference(0.66, 0.68, 459) < 0.065  # two standard errors of the difference
    assert verdict(summary(0.658, 0.680)).startswith("Pretraining made no clear difference")
    assert verdict(summary(0.473, 0.680)).startswith("Pretraining did not help here")
    assert verdict(summary(0.800, 0.680)).startswith("Pretraining helped")
