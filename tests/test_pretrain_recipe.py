"""`lmforge pretrain`'s recipes (small-budget, the default for small encoders; standard), --time-budget, and their bad input."""

from __future__ import annotations

import json

import pytest

from lmforge import presets
from lmforge.cli import main
from lmforge.train.recipe import default_recipe
from lmforge.train.budget import MIN_EVAL_INTERVAL, RESERVE, endless, minimum_budget, plan_steps
from lmforge.errors import ConfigError
from lmforge.train.optim import learning_rate
from lmforge.train.settings import TrainSettings
from test_train_resume import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    return write_shards(folder, "wordpiece")


def pretrain(shards, out, *extra) -> int:
    return main(["pretrain", "--preset", "tiny-bert", "--vocab-from-data", "--data", str(shards), "--out", str(out),
                 "--batch-size", "4", "--seq-len", "32", "--eval-batches", "1", "--quiet", "--no-codecarbon", *extra])


def test_the_small_budget_recipe_reshapes_the_run_and_standard_keeps_bert(shards, tmp_path):
    assert pretrain(shards, tmp_path / "small", "--max-steps", "8", "--recipe", "small-budget") == 0
    run = json.loads((tmp_path / "small" / "run.json").read_text())
    assert run["recipe"] == "small-budget" and run["objective_options"] == {"probability": 0.3}
    model = run["model"]
    assert (model["norm_placement"], model["bias"], model["dropout"], model["final_norm"]) == ("pre", False, 0.0, True)
    train = run["train"]
    assert (train["lr"], train["schedule"], train["min_lr_ratio"]) == (1e-3, "linear", 0.0)
    settings = TrainSettings.from_dict(train)
    assert learning_rate(settings.max_steps, settings) == 0.0  # zero exactly at the end of the budget

    assert pretrain(shards, tmp_path / "standard", "--max-steps", "2", "--warmup-steps", "1",
                    "--recipe", "standard") == 0
    run = json.loads((tmp_path / "standard" / "run.json").read_text())
    assert run["model"]["norm_placement"] == "post" and run["objective_options"] == {"probability": 0.15}


def test_small_encoders_get_the_small_budget_recipe_by_default_and_the_rest_standard(shards, tmp_path):
    assert pretrain(shards, tmp_path / "default", "--max-steps", "2", "--warmup-steps", "1") == 0
    run = json.loads((tmp_path / "default" / "run.json").read_text())
    assert run["recipe"] == "small-budget" and run["objective_options"] == {"probability": 0.3}
    assert (run["model"]["positions"], run["model"]["classifier_pool"]) == ("rotary", "mean")
    assert default_recipe(presets.get("tiny-bert")) == default_recipe(presets.get("tiny-roberta")) == "small-budget"
    for name in ("bert-base-uncased", "minilm-l6", "tiny-gpt2", "tiny-bart", "tiny-t5"):
        assert default_recipe(presets.get(name)) == "standard", name  # published sizes, other families


def test_time_budget_sizes_the_run_and_resumes_exactly(shards, tmp_path):
    out = tmp_path / "budget"
    assert pretrain(shards, out, "--time-budget", "90") == 0
    run = json.loads((out / "run.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    steps = run["train"]["max_steps"]
    assert run["time_budget_s"] == 90 and steps >= 1 and summary["steps"] <= steps
    assert summary["steps"] == steps or "time budget" in (summary.get("stopped_early") or "")  # the schedule's end, or the budget
    assert run["train"]["eval_every"] >= MIN_EVAL_INTERVAL and run["train"]["save_every"] >= MIN_EVAL_INTERVAL
    evaluated = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert evaluated and len(evaluated) <= -(-summary["steps"] // run["train"]["eval_every"])
    # resuming a finished budget run changes nothing; a different budget with --resume is refused
    assert pretrain(shards, out, "--resume", "--time-budget", "120") == 2


@pytest.mark.parametrize("budget, message", [("0", "must be a positive, finite number of seconds"),
                                             ("-5", "must be a positive, finite number of seconds"),
                                             ("inf", "must be a positive, finite number of seconds"),
                                             ("nan", "must be a positive, finite number of seconds"),
                                             ("0.001", "shorter than one training step")])
def test_bad_budgets_are_one_line_errors_naming_the_minimum(shards, tmp_path, capsys, budget, message):
    assert pretrain(shards, tmp_path / "bad", "--time-budget", budget) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    if "shorter" in message:
        assert "give at least" in error
    assert not (tmp_path / "bad").exists()


def test_the_budget_timing_runs_pass_after_pass_over_a_small_split():
    class Passes:  # a re-iterable split of two batches, as ShardBatches is (one pass per iter)
        def __iter__(self):
            return iter([{"batch": 0}, {"batch": 1}])

    source = endless(Passes())
    assert [next(source)["batch"] for _ in range(5)] == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError, match="no batch to time"):
        next(endless([]))


def test_budget_arithmetic():
    assert plan_steps(100, 1.0)[0] == int(100 * (1 - RESERVE))  # no evaluations timed
    with pytest.raises(ConfigError, match=f"at least {minimum_budget(3.0)} seconds"):
        plan_steps(2, 3.0)


def evaluations(steps: int, every: int) -> int:
    return -(-steps // every)  # one every `every` steps and one at the end


@pytest.mark.parametrize("seconds, step_s, eval_s", [(300, 0.07, 1.5), (100, 0.1, 2.0), (30, 0.5, 3.0), (12, 0.5, 0.2),
                                                     (3600, 0.2, 40.0)])
def test_evaluations_count_against_the_budget_and_are_never_every_step(seconds, step_s, eval_s):
    steps, every = plan_steps(seconds, step_s, eval_s)
    usable = seconds * (1 - RESERVE)
    spent = steps * step_s + evaluations(steps, every) * eval_s
    assert spent <= usable < spent + step_s + eval_s  # fills the budget, evaluations included
    assert every >= MIN_EVAL_INTERVAL and every >= steps // 10 and evaluations(steps, every) <= 11
    bare, _ = plan_steps(seconds, step_s)
    assert bare - steps >= (evaluations(steps, every) * eval_s) // step_s - 1  # the evaluations' time came off the steps
    assert plan_steps(seconds, step_s, eval_s, eval_every=5)[1] == 5  # a given interval is kept


def test_a_budget_that_cannot_hold_a_step_and_an_evaluation_names_the_minimum():
    with pytest.raises(ConfigError, match="one training step and one evaluation.*give at least 4 seconds"):
        plan_steps(2, 1.0, 1.5)


def test_budget_and_max_steps_together_and_bad_mask_probability(shards, tmp_path, capsys):
    assert pretrain(shards, tmp_path / "a", "--time-budget", "10", "--max-steps", "3") == 2
    assert "either --max-steps or --time-budget" in capsys.readouterr().err
    assert pretrain(shards, tmp_path / "b", "--max-steps", "3", "--mask-probability", "1.5") == 2
    assert "between 0 and 1" in capsys.readouterr().err
