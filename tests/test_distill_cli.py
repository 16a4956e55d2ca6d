"""`lmforge distill` end to end on tiny models: task and masked-LM distillation, and bad input (exit 2)."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from lmforge import ModelConfig, build_model, load
from lmforge.cli import main
from lmforge.data import prepare_corpus
from lmforge.tokenizer import train_tokenizer

GOOD, BAD = ["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "dull"]
FILLER = ["the", "film", "was", "a", "story", "and", "it", "really", "quite", "very", "plot", "acting"]


def sentence(rng: random.Random, label: int) -> str:
    words = rng.choices(FILLER, k=rng.randint(4, 9)) + [rng.choice(GOOD if label else BAD)]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Labelled sentiment-like files, a WordPiece tokenizer, shards, and two tiny teachers saved with it."""
    folder = tmp_path_factory.mktemp("distill")
    rng = random.Random(0)
    for name, count in (("train", 96), ("valid", 32)):
        labels = [i % 2 for i in range(count)]
        (folder / f"{name}.txt").write_text("".join(f"{y} {sentence(rng, y)}\n" for y in labels))
    (folder / "corpus.txt").write_text("\n\n".join(" ".join(sentence(rng, i % 2) for _ in range(6))
                                                   for i in range(120)) + "\n")
    tokenizer = train_tokenizer("wordpiece", 120, [folder / "corpus.txt"], min_frequency=1)
    prepare_corpus([folder / "corpus.txt"], tokenizer, folder / "shards", blank_line_docs=True, valid_fraction=0.2,
                   progress=False)
    other = train_tokenizer("wordpiece", 100, [folder / "corpus.txt"], min_frequency=1, lowercase=True)
    prepare_corpus([folder / "corpus.txt"], other, folder / "other_shards", blank_line_docs=True, valid_fraction=0.2,
                   progress=False)
    config = ModelConfig(family="encoder", vocab_size=tokenizer.vocab_size, d_model=32, n_heads=2, n_layers=4,
                         d_ff=64, max_positions=64, norm_placement="post", embedding_norm=True, final_norm=False,
                         type_vocab_size=2, pad_token_id=tokenizer.pad_id, mask_token_id=tokenizer.mask_id,
                         id2label={0: "0", 1: "1"})
    for task in ("sequence-classification", "masked-lm", "embedding"):
        model = build_model(config, task)
        model.tokenizer = tokenizer
        model.save(folder / task)
    return folder


def distill(data, out, *extra) -> int:
    return main(["distill", "--out", str(out), "--max-steps", "6", "--batch-size", "8", "--warmup-steps", "1",
                 "--eval-every", "3", "--eval-batches", "2", "--speed-batches", "2", "--quiet", "--no-codecarbon",
                 *extra])


def test_task_distillation_writes_the_three_ratios_into_the_card(data, tmp_path, capsys):
    out = tmp_path / "task"
    code = distill(data, out, "--teacher", str(data / "sequence-classification"), "--train", str(data / "train.txt"),
                   "--valid", str(data / "valid.txt"), "--student-layers", "2", "--unlabelled", str(data / "corpus.txt"))
    printed = capsys.readouterr().out
    assert code == 0
    assert "teacher layers {'encoder': [0, 3]}" in printed and "sequences / s" in printed
    student = load(out / "final")
    assert student.config.n_layers == 2 and student.task == "sequence-classification"
    report = json.loads((out / "distill.json").read_text())["report"]
    teacher = load(data / "sequence-classification")
    assert report["parameter_ratio"] == pytest.approx(student.num_parameters() / teacher.num_parameters())
    assert report["teacher_quality"] > 0 and report["student_quality"] > 0
    card = (out / "final" / "README.md").read_text()
    metrics = {m["name"]: m["value"] for m in yaml.safe_load(card.split("---")[1])["model-index"][0]["results"][0]["metrics"]}
    assert metrics["parameter_ratio"] == round(report["parameter_ratio"], 4)
    assert metrics["speedup"] == round(report["speedup"], 4) and "quality_ratio" in metrics
    assert "of its parameters" in card


def test_masked_lm_distillation_on_shards(data, tmp_path, capsys):
    out = tmp_path / "mlm"
    assert distill(data, out, "--teacher", str(data / "masked-lm"), "--data", str(data / "shards"),
                   "--seq-len", "32") == 0
    assert "masked-token accuracy" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r][-1] == 6
    assert load(out / "final").config.n_layers == 2  # default: half the teacher's 4


def error_of(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_bad_input_is_a_one_line_error(data, tmp_path, capsys):
    classifier = str(data / "sequence-classification")
    labelled = ["--train", str(data / "train.txt"), "--valid", str(data / "valid.txt")]
    assert distill(data, tmp_path / "a", "--teacher", str(data / "embedding"), *labelled) == 2
    assert "no head to distil from" in error_of(capsys)
    assert distill(data, tmp_path / "b", "--teacher", classifier, "--objective", "mlm", *labelled) == 2
    assert "use --objective task" in error_of(capsys)
    assert distill(data, tmp_path / "c", "--teacher", classifier, "--student-layers", "5", *labelled) == 2
    assert "deeper than its teacher" in error_of(capsys)
    assert distill(data, tmp_path / "d", "--teacher", str(data / "masked-lm"), "--data",
                   str(data / "other_shards"), "--seq-len", "32") == 2
    assert "prepared with another tokenizer" in error_of(capsys)
    assert distill(data, tmp_path / "e", "--teacher", classifier, "--data", str(data / "shards")) == 2
    assert "--train FILE and --valid FILE" in error_of(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_a_teacher_adapter_is_merged_into_the_teacher(data, tmp_path, capsys):
    """--adapter DIR (the inference commands' flag) for --teacher: the report scores the adapted teacher."""
    import torch

    from lmforge.checkpoint.adapter import save_adapter
    from lmforge.eval.evaluate import evaluate
    from lmforge.models.lora import LoraSettings, add_lora, merge_and_unload

    teacher = load(data / "sequence-classification")
    add_lora(teacher, LoraSettings(r=2, targets=("attention", "mlp")))
    with torch.no_grad():
        for name, param in teacher.named_parameters():
            if name.endswith(".B"):
                param.normal_(std=3.0)  # an adapter that changes the teacher's outputs
    save_adapter(teacher, tmp_path / "adapter", base=str(data / "sequence-classification"))
    out = tmp_path / "run"
    assert distill(data, out, "--teacher", str(data / "sequence-classification"), "--train", str(data / "train.txt"),
                   "--valid", str(data / "valid.txt"), "--adapter", str(tmp_path / "adapter")) == 0
    report = json.loads((out / "distill.json").read_text())["report"]
    adapted = evaluate(merge_and_unload(load(data / "sequence-classification", adapter=tmp_path / "adapter")),
                       data / "valid.txt")
    plain = evaluate(data / "sequence-classification", data / "valid.txt")
    assert report["teacher_loss"] == pytest.approx(adapted["eval_loss"], abs=1e-5)
    assert report["teacher_quality"] == adapted["accuracy"]
    assert abs(adapted["eval_loss"] - plain["eval_loss"]) > 1e-3  # the check tells the two teachers apart
