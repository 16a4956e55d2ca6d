"""The parts of the label-efficiency demo, fast: drawing k examples per label, the unigram entropy of a
prepared corpus, per-example hits of a classifier, a small curve end to end, and its bad input."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from finetune_helpers import sentiment_lines, wordpiece_tokenizer, write_lines
from lmforge import presets
from lmforge.cli import main
from lmforge.data import TokenShards, prepare_corpus, unigram_entropy
from lmforge.demo.curve import Arm, CurvePlan, comparisons, curve_summary, run_curve, start_curve
from lmforge.errors import ConfigError, DataError
from lmforge.eval.evaluate import evaluate
from lmforge.eval.hits import classification_hits
from lmforge.finetune import FinetuneRequest, finetune
from lmforge.finetune.tasks import sample_per_label
from lmforge.models import build_model
from test_train_resume import write_shards


def rows(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(label, f"{label} text {i}") for label, n in counts.items() for i in range(n)]


def test_sample_per_label_draws_k_of_every_label_seeded_and_in_order():
    items = rows({"b": 10, "a": 7, "c": 12})
    drawn = sample_per_label(items, lambda r: r[0], 5, seed=3)
    assert Counter(label for label, _ in drawn) == {"a": 5, "b": 5, "c": 5}
    assert drawn == sorted(drawn, key=items.index)  # kept in their original order
    assert drawn == sample_per_label(items, lambda r: r[0], 5, seed=3)
    assert drawn != sample_per_label(items, lambda r: r[0], 5, seed=4)
    assert set(sample_per_label(items, lambda r: r[0], 7, seed=0)) >= {r for r in items if r[0] == "a"}


def test_sample_per_label_refuses_a_size_a_label_cannot_fill():
    with pytest.raises(DataError, match=r"label 'a' has only 7; ask for at most 7 per label"):
        sample_per_label(rows({"b": 10, "a": 7}), lambda r: r[0], 8, option="--sizes")
    with pytest.raises(ConfigError, match="--sizes"):
        sample_per_label(rows({"b": 10}), lambda r: r[0], 0)


def test_unigram_entropy_matches_the_token_counts(tmp_path):
    shards = TokenShards(write_shards(tmp_path, "wordpiece"))
    special = set(shards.tokenizer.special_ids)
    counts = Counter(int(t) for t in shards.train if int(t) not in special)
    total = sum(counts.values())
    expected = -sum(c / total * math.log(c / total) for c in counts.values())
    assert unigram_entropy(shards) == pytest.approx(expected, rel=1e-9)
    assert 0 < unigram_entropy(shards) <= math.log(len(counts)) + 1e-9


def test_hits_are_in_file_order_and_agree_with_evaluate(tmp_path):
    tokenizer = wordpiece_tokenizer(tmp_path / "tok")
    train = write_lines(tmp_path / "train.txt", sentiment_lines(64, 0))
    test = write_lines(tmp_path / "test.txt", sentiment_lines(41, 1))
    request = FinetuneRequest("classify", train, preset="tiny-bert", from_scratch=True, tokenizer=tmp_path / "tok",
                              settings={"max_steps": 30, "batch_size": 16, "eval_every": 0})
    result = finetune(tmp_path / "ft", request, progress=False)
    hits = classification_hits(result.model_path, test)
    assert len(hits) == 41 and sum(hits) / 41 == pytest.approx(evaluate(result.model_path, test)["accuracy"])
    from lmforge.infer.pipelines import pipeline
    predicted = pipeline("text-classification", result.model_path)([line[2:] for line in sentiment_lines(41, 1)])
    assert hits == [p["label"] == line[0] for p, line in zip(predicted, sentiment_lines(41, 1))]


def untrained_encoder_and_labels(tmp_path) -> list[tuple[str, str]]:
    """An untrained tiny BERT with its tokenizer saved in tmp_path/base; 40 (label, text) sentiment pairs."""
    tokenizer = wordpiece_tokenizer(tmp_path / "tok")
    config = presets.get("tiny-bert").replace(vocab_size=tokenizer.vocab_size, max_positions=32)
    model = build_model(config, "masked-lm")
    model.attach_tokenizer(tokenizer)
    model.save(tmp_path / "base")
    return [(line[0], line[2:]) for line in sentiment_lines(40, 2)]


def test_a_small_curve_runs_every_arm_at_every_size_and_seed(tmp_path):
    labelled = untrained_encoder_and_labels(tmp_path)
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"label": l[0], "text": l[2:]}) + "\n" for l in sentiment_lines(30, 3)))
    plan = CurvePlan(sizes=(2, 6), seeds=2, max_length=32, batch_size=4, epochs=1, min_steps=3)
    arms = [Arm("pretrained", tmp_path / "base"), Arm("scratch", tmp_path / "base", from_scratch=True)]
    said = []
    results = run_curve(arms, labelled, test, plan, tmp_path / "curve", say=said.append)
    assert len(said) == 4 and all(len(r.hits[s]) == 2 and len(r.hits[s][0]) == 30 for r in results for s in (2, 6))
    summary = curve_summary(results, plan.sizes)
    point = summary[0]["points"]["6"]
    assert point["min"] <= point["mean"] <= point["max"] and len(point["seeds"]) == 2
    assert summary[0]["checkpoint"] and (tmp_path / "curve" / "arm1" / "size6_seed0" / "model").is_dir()
    assert not (tmp_path / "curve" / "arm1" / "size2_seed0").exists()  # only one model per arm is kept
    verdicts = comparisons(results[0], results[1], plan.sizes)
    assert set(verdicts) == {"2", "6"} and verdicts["2"]["verdict"] in ("helped", "no clear difference", "hurt")
    with pytest.raises(DataError, match="has only 20"):
        run_curve(arms, labelled, test, CurvePlan(sizes=(21,), seeds=1, max_length=32), tmp_path / "too_many")
    assert not (tmp_path / "too_many").exists()


def test_an_arm_split_over_two_processes_joins_into_one_result_keeping_the_largest_sizes_model(tmp_path):
    from lmforge.demo.curve import ArmResults
    from lmforge.demo.run import joined

    kept_here, kept_there = tmp_path / "arm3" / "size4_seed0" / "model", tmp_path / "arm3" / "size64_seed0" / "model"
    kept_here.mkdir(parents=True), kept_there.mkdir(parents=True)
    here = ArmResults("m", {4: [0.5, 0.6]}, {4: [[True, False], [True, True]]}, 1.0, 2.0, 0.1, 0.01, str(kept_here))
    there = ArmResults("m", {16: [0.7, 0.8], 64: [0.9, 0.9]}, {16: [[True]] * 2, 64: [[False]] * 2}, 3.0, 4.0, 0.2,
                       0.02, str(kept_there))
    both = joined(here, there)
    assert both.accuracy == {4: [0.5, 0.6], 16: [0.7, 0.8], 64: [0.9, 0.9]} and both.hits[4] == here.hits[4]
    assert (both.wall_s, both.cpu_s) == (4.0, 6.0) and both.energy_wh == pytest.approx(0.3)
    assert both.kept_checkpoint == str(kept_there) and kept_there.is_dir()
    assert not kept_here.parent.exists()  # one fine-tuned model per arm is kept
    assert joined(None, there) is there


def test_an_arm_run_in_a_second_process_gives_what_it_gives_here(tmp_path):
    import torch

    labelled = untrained_encoder_and_labels(tmp_path)
    test = write_lines(tmp_path / "test.txt", sentiment_lines(30, 3))
    plan = CurvePlan(sizes=(3,), seeds=2, max_length=32, batch_size=4, epochs=1, min_steps=4)
    arms = [Arm("pretrained", tmp_path / "base", folder="pre")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = run_curve(arms, labelled, test, plan, tmp_path / "here", say=lambda line: None)[0]
    finally:
        torch.set_num_threads(threads)
    there = start_curve(arms, labelled, test, plan, tmp_path / "there", threads=1).results()[0]
    assert there.hits == here.hits and there.accuracy == here.accuracy and there.name == "pretrained"
    assert (tmp_path / "there" / "pre" / "size3_seed0" / "model").is_dir()
    failing = start_curve([Arm("missing", tmp_path / "nowhere")], labelled, test, plan, tmp_path / "x", threads=1)
    with pytest.raises(Exception, match="nowhere"):
        failing.results()  # the other process's error reaches the caller


def test_demo_refuses_bad_sizes_before_writing_anything(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--sizes", "4,x"]) == 2
    assert "--sizes takes whole numbers" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--sizes", "4,100000"]) == 2
    assert "--sizes asks for 100000 labelled examples per label" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--sizes", "0,4"]) == 2
    assert not (tmp_path / "d").exists()
