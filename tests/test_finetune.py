"""Fine-tuning: task heads on a copied backbone, the from-scratch baseline, best checkpoint by the task
metric, early stopping, label maps in the checkpoint, every task end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.errors import ConfigError, DataError
from lmforge.finetune import FinetuneRequest, build_task_model, finetune, resolve_source
from lmforge.finetune.tasks import DataOptions, read_task_data
from finetune_helpers import bpe_tokenizer, labelled_files, sentiment_lines, write_lines

QUICK = {"max_steps": 40, "batch_size": 16, "lr": 3e-3, "warmup_steps": 4, "eval_every": 20, "log_every": 10}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return labelled_files(tmp_path_factory.mktemp("finetune"))


@pytest.fixture(scope="module")
def encoder_checkpoint(files):
    """A tiny BERT (masked-LM head) checkpoint with the test tokenizer, as pretraining would leave it."""
    config = lmforge.presets.get("tiny-bert").replace(vocab_size=files["tokenizer"].vocab_size, dropout=0.0,
                                                      attention_dropout=0.0)
    model = lmforge.build_model(config, "masked-lm")
    model.tokenizer = files["tokenizer"]
    return model.save(files["root"] / "bert")


def test_backbone_is_copied_and_the_new_head_reported(files, encoder_checkpoint):
    source = resolve_source(encoder_checkpoint)
    labels = read_task_data("classify", files["train"], source.tokenizer).labels
    start = build_task_model("classify", source, labels)
    ours, theirs = start.model.state_dict(), source.model.state_dict()
    assert sorted(start.initialised) == ["head.out.bias", "head.out.weight"]
    assert set(start.unused) == {k for k in theirs if k.startswith("head.")}  # the MLM head is dropped
    assert start.copied == len(ours) - 2
    for name, tensor in ours.items():
        if not name.startswith("head."):
            assert torch.equal(tensor, theirs[name]), name
    assert start.model.config.id2label == {0: "0", 1: "1"} and start.model.task == "sequence-classification"
    assert "head.out.weight" in start.report()


def test_from_scratch_keeps_the_architecture_but_not_the_weights(files, encoder_checkpoint):
    source = resolve_source(encoder_checkpoint, from_scratch=True)
    start = build_task_model("tag", source, read_task_data("tag", files["tag_train"], source.tokenizer).labels,
                             from_scratch=True)
    assert start.copied == 0 and "random weights" in start.report()
    embed = start.model.state_dict()["embed.weight"]
    assert embed.shape == source.model.embed.weight.shape and not torch.equal(embed, source.model.embed.weight)


def test_classifier_learns_keeps_the_best_checkpoint_and_its_label_map(files, encoder_checkpoint, tmp_path):
    result = finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], files["valid"],
                                                        checkpoint=encoder_checkpoint,
                                                        settings={**QUICK, "max_steps": 80, "eval_every": 40}),
                      progress=False)
    evaluations = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                   if "accuracy" in line]
    best = max(evaluations, key=lambda r: r["accuracy"])
    assert result.metrics["accuracy"] == best["accuracy"] >= 0.9  # the words decide the label: learnable
    assert result.best_step == best["step"] and result.steps == 80
    model = lmforge.load(result.model_path)
    assert model.task == "sequence-classification" and model.config.id2label == {0: "0", 1: "1"}
    classify = lmforge.pipeline("text-classification", model)
    assert classify("the film was superb and lovely")["label"] == "1"
    assert classify("the film was awful and dull")["label"] == "0"
    record = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert record["labels"] == ["0", "1"] and record["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert result.wall_s > 0 and result.energy_kwh > 0


def test_classifier_learns_in_bf16_with_fp32_master_weights(files, encoder_checkpoint, tmp_path):
    settings = {**QUICK, "max_steps": 80, "eval_every": 40, "precision": "bf16"}
    result = finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], files["valid"],
                                                        checkpoint=encoder_checkpoint, settings=settings), progress=False)
    assert result.metrics["accuracy"] >= 0.9
    assert lmforge.load(result.model_path).dtype == torch.float32


def test_max_train_examples_and_early_stopping(files, encoder_checkpoint, tmp_path):
    # A learning rate too small to change any prediction: accuracy cannot improve after the first evaluation.
    settings = {**QUICK, "lr": 1e-9, "eval_every": 2, "max_steps": 40}
    result = finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], files["valid"],
                                                        checkpoint=encoder_checkpoint, settings=settings,
                                                        max_train_examples=24, patience=2), progress=False)
    assert result.steps == 6 and "did not improve for 2 evaluations" in result.summary["stopped_early"]
    assert result.best_step == 2
    assert json.loads((tmp_path / "run" / "finetune.json").read_text())["train_examples"] == 24


def test_tagger_from_a_preset_reports_entity_f1(files, tmp_path):
    settings = {**QUICK, "max_steps": 60, "eval_every": 30}
    result = finetune(tmp_path / "run", FinetuneRequest("tag", files["tag_train"], files["tag_valid"],
                                                        preset="tiny-bert", from_scratch=True,
                                                        tokenizer=files["tok"], settings=settings), progress=False)
    assert result.metrics["f1"] >= 0.8  # names and places are fixed words: learnable in a few steps
    model = lmforge.load(result.model_path)
    assert model.config.id2label == {0: "O", 1: "B-LOC", 2: "B-PER", 3: "I-LOC"}
    entities = lmforge.pipeline("ner", model)("alice was in rome city")
    assert [e["entity_group"] for e in entities] == ["PER", "LOC"]


def test_causal_lm_adaptation_lowers_the_validation_loss(files, tmp_path):
    bpe_tokenizer(tmp_path / "bpe")
    text = write_lines(tmp_path / "text.txt", [line.split(" ", 1)[1] for line in sentiment_lines(200, seed=5)])
    valid = write_lines(tmp_path / "valid.txt", [line.split(" ", 1)[1] for line in sentiment_lines(60, seed=6)])

    result = finetune(tmp_path / "run", FinetuneRequest("clm", text, valid, preset="tiny-gpt2", from_scratch=True,
                                                        tokenizer=tmp_path / "bpe",
                                                        settings={**QUICK, "eval_every": 5},
                                                        data=DataOptions(block_size=32)), progress=False)
    losses = [json.loads(line)["eval_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "eval_loss" in line]
    assert losses[-1] < losses[0] - 1.0 and result.metrics["eval_loss"] == min(losses)
    assert result.metrics["eval_ppl"] == pytest.approx(torch.tensor(min(losses)).exp().item(), rel=1e-6)


def test_a_label_the_training_data_lacks_is_refused(files, encoder_checkpoint, tmp_path):
    valid = write_lines(tmp_path / "valid.txt", ["1 good film", "2 a neutral film"])
    with pytest.raises(DataError, match=r"valid.txt:2: label '2' was not in the training data"):
        finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], valid, checkpoint=encoder_checkpoint,
                                                   settings=QUICK), progress=False)


def test_classify_on_an_encoder_decoder_explains_what_works(files, tmp_path):
    model = lmforge.build_model("tiny-bart")
    model.tokenizer = files["tokenizer"]
    with pytest.raises(ConfigError, match="encoder-decoder model.*use --task seq2seq"):
        finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], files["valid"],
                                                   checkpoint=model.save(tmp_path / "bart"), settings=QUICK),
                 progress=False)


def test_starting_points_that_cannot_work_are_refused(files, tmp_path):
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        resolve_source(preset="tiny-bert", from_scratch=True)
    with pytest.raises(ConfigError, match="pass --from-scratch"):
        resolve_source(preset="tiny-bert", tokenizer=files["tok"])
    with pytest.raises(lmforge.LmforgeError, match="has no tokenizer"):
        resolve_source(lmforge.build_model("tiny-bert").save(tmp_path / "bare"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        finetune(tmp_path / "busy", FinetuneRequest("classify", files["train"], preset="tiny-bert",
                                                    from_scratch=True, tokenizer=files["tok"]))


def test_a_decoder_classifier_reads_the_last_token(files):
    source = resolve_source(preset="tiny-gpt2", from_scratch=True, tokenizer=files["tok"])
    model = build_task_model("classify", source, read_task_data("classify", files["train"], source.tokenizer).labels,
                             from_scratch=True).model.eval()
    ids = torch.tensor([source.tokenizer.encode("the film was good"), source.tokenizer.encode("the film was bad")])
    with torch.no_grad():
        logits = model(ids).logits
    assert model.config.classifier_pool == "last" and not torch.allclose(logits[0], logits[1])


def test_the_same_settings_give_the_same_model_whatever_ran_before(files, encoder_checkpoint, tmp_path):
    short = {**QUICK, "max_steps": 3, "eval_every": 3, "warmup_steps": 1}  # a given warm-up must fit the run
    weights = []
    for index, scratch in enumerate([True, True, False, False]):
        torch.rand(index + 1)  # a different global RNG state before each call, as earlier work would leave
        result = finetune(tmp_path / str(index), FinetuneRequest("classify", files["train"], files["valid"],
                                                                 checkpoint=encoder_checkpoint,
                                                                 from_scratch=scratch, settings=short),
                          progress=False)
        weights.append(lmforge.load(result.model_path).state_dict())
    for first, second in (weights[0:2], weights[2:4]):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_learning_rate_warmup_and_batch_follow_the_model_size(files, encoder_checkpoint, tmp_path):
    from lmforge.finetune.defaults import size_defaults

    assert size_defaults(110_000_000, 1000) == {"lr": 5e-5, "warmup_steps": 100, "batch_size": 32}  # BERT-base
    assert size_defaults(22_700_000, 300)["lr"] == 2e-4  # MiniLM
    result = finetune(tmp_path / "run", FinetuneRequest("classify", files["train"], files["valid"],
                                                        checkpoint=encoder_checkpoint,
                                                        settings={"max_steps": 80, "eval_every": 40}),
                      progress=False)
    settings = json.loads((tmp_path / "run" / "finetune.json").read_text())["settings"]
    assert settings["lr"] == 1e-3 and settings["warmup_steps"] == 8 and settings["batch_size"] == 32
    assert result.metrics["accuracy"] >= 0.9 and result.warning is None  # the tiny model learns at its default


def test_a_run_stuck_at_the_majority_class_says_so_and_names_the_flag(files, encoder_checkpoint, tmp_path, capsys):
    from lmforge.cli import main

    code = main(["finetune", "--from", str(encoder_checkpoint), "--task", "classify", "--train", str(files["train"]),
                 "--valid", str(files["valid"]), "--out", str(tmp_path / "run"), "--lr", "1e-9", "--max-steps", "10",
                 "--eval-every", "5", "--quiet"])
    assert code == 0
    assert json.loads((tmp_path / "run" / "finetune.json").read_text())["metrics"]["accuracy"] <= 0.6
    warning = capsys.readouterr().err
    assert "never rose above the majority-class level" in warning and "--lr 0.001" in warning


def test_majority_warning_text():
    from lmforge.finetune.defaults import stuck_at_majority_warning

    labels = ["a"] * 8 + ["b"] * 2
    warning = stuck_at_majority_warning(0.8, labels, 5e-5, 2_000_000)
    assert "majority-class level 0.800" in warning and "--lr 0.001" in warning and "--max-steps" in warning
    assert stuck_at_majority_warning(0.95, labels, 5e-5, 2_000_000) is None


def test_every_finetune_flag_reaches_the_request():
    """The flags are generated from FinetuneRequest, DataOptions, LoraSettings and TrainSettings: each one given
    on the command line (anywhere among the others) lands in its field; the others keep the dataclass defaults."""
    from lmforge.cli import build_parser
    from lmforge.commands.finetune import request_of
    from lmforge.models.lora import LoraSettings

    args = build_parser().parse_args([
        "finetune", "--task", "seq2seq", "--train", "a.en", "a.de", "--valid", "b.en", "b.de", "--from", "ckpt",
        "--tokenizer", "tok", "--max-train-examples", "50", "--max-valid-examples", "20", "--patience", "3",
        "--time-budget", "60.5", "--best-metric", "chrf", "--max-new-tokens", "12", "--out", "run", "--country", "FRA",
        "--max-length", "64", "--text-field", "t", "--pair-field", "p", "--label-field", "l", "--source-field", "s",
        "--target-field", "g", "--block-size", "32", "--errors", "replace", "--lora-r", "4", "--lora-alpha", "8",
        "--lora-dropout", "0.1", "--lora-targets", "q,v", "--rslora", "--lr", "0.01", "--max-steps", "7", "--compile"])
    request = request_of(args)
    assert (request.task, request.train, request.valid, request.checkpoint, request.preset, request.tokenizer) == \
        ("seq2seq", ["a.en", "a.de"], ["b.en", "b.de"], "ckpt", None, "tok")
    assert (request.max_train_examples, request.max_valid_examples, request.patience, request.time_budget,
            request.best_metric, request.max_new_tokens, request.country) == (50, 20, 3, 60.5, "chrf", 12, "FRA")
    assert request.data == DataOptions(max_length=64, text_field="t", pair_field="p", label_field="l",
                                       source_field="s", target_field="g", block_size=32, errors="replace")
    assert request.lora == LoraSettings(r=4, alpha=8.0, dropout=0.1, targets=("q", "v"), rslora=True)
    assert request.settings == {"lr": 0.01, "max_steps": 7, "compile": True} and not request.from_scratch
    plain = request_of(build_parser().parse_args(["finetune", "--preset", "tiny-bert", "--from-scratch", "--task",
                                                  "classify", "--train", "x", "--out", "o"]))
    assert plain == FinetuneRequest("classify", ["x"], preset="tiny-bert", from_scratch=True, settings={})
