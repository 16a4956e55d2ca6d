"""Distillation: the loss terms against their definitions, the student's initialisation, the report."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge import ModelConfig, build_model, presets
from lmforge.distill import (DistillationLoss, LossWeights, cosine_loss, hard_label_loss, layer_choice, make_student,
                             objective_for, soft_target_loss, student_config)
from lmforge.distill.report import compare_quality, distillation_report, format_report
from lmforge.errors import ConfigError


# ---- loss terms on hand-made numbers ---------------------------------------------------------------------------
def kl_by_hand(student_row, teacher_row, t):
    p = [math.exp(x / t) for x in teacher_row]
    q = [math.exp(x / t) for x in student_row]
    p = [x / sum(p) for x in p]
    q = [x / sum(q) for x in q]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_soft_target_loss_is_t_squared_kl_teacher_to_student():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
    for t in (1.0, 2.0, 4.0):
        expected = t * t * (kl_by_hand(student[0].tolist(), teacher[0].tolist(), t)
                            + kl_by_hand(student[1].tolist(), teacher[1].tolist(), t)) / 2
        assert soft_target_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-5)
    # positions select rows; identical logits give zero; no selected row gives zero
    positions = torch.tensor([False, True])
    only_second = 4.0 * kl_by_hand(student[1].tolist(), teacher[1].tolist(), 2.0)
    assert soft_target_loss(student, teacher, 2.0, positions).item() == pytest.approx(only_second, rel=1e-5)
    assert soft_target_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert soft_target_loss(student, teacher, 2.0, torch.tensor([False, False])).item() == 0.0


def test_cosine_loss_is_one_minus_cosine_over_selected_vectors():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]]])  # (1, 3, 2)
    teacher = torch.tensor([[[0.0, 2.0], [-1.0, -1.0], [6.0, 8.0]]])
    # cosines: 0 (orthogonal), -1 (opposite), 1 (same direction) -> losses 1, 2, 0
    assert cosine_loss(student, teacher).item() == pytest.approx(1.0, abs=1e-6)
    positions = torch.tensor([[True, True, False]])
    assert cosine_loss(student, teacher, positions).item() == pytest.approx(1.5, abs=1e-6)


def test_hard_label_loss_is_the_models_cross_entropy_and_zero_without_labels():
    model = build_model(presets.get("tiny-bert"), "sequence-classification")
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(-1))) - math.log(math.e / (1 + math.e))) / 2
    assert hard_label_loss(model, logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert hard_label_loss(model, logits, torch.tensor([-100, -100])).item() == 0.0
    lm = build_model(presets.get("tiny-gpt2"))  # causal LM: position t is scored against label t+1
    logits = torch.randn(1, 4, lm.config.vocab_size)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert hard_label_loss(lm, logits, ids).item() == pytest.approx(F.cross_entropy(logits[0, :3], ids[0, 1:]).item(),
                                                                    rel=1e-5)


def test_weights_mix_the_three_terms():
    torch.manual_seed(1)
    teacher = build_model(presets.get("tiny-bert").replace(dropout=0.0, attention_dropout=0.0), "masked-lm").eval()
    student, _ = make_student(teacher, student_config(teacher.config, 1))
    student.eval()
    ids = torch.randint(5, teacher.config.vocab_size, (2, 9))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    weights = LossWeights(alpha_ce=0.5, alpha_hard=3.0, alpha_cos=7.0, temperature=3.0)
    loss, parts = DistillationLoss(teacher, weights)(student, batch)
    s, t = student(**batch), teacher(**batch)
    expected = (0.5 * soft_target_loss(s.logits, t.logits, 3.0, labels != -100) + 3.0 * s.loss
                + 7.0 * cosine_loss(s.hidden_states, t.hidden_states, batch["attention_mask"].bool()))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["hard"] == pytest.approx(s.loss.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="temperature"):
        LossWeights(temperature=0).validate()
    with pytest.raises(ConfigError, match="nothing would be learned"):
        LossWeights(0, 0, 0).validate()


# ---- the student -----------------------------------------------------------------------------------------------
def test_layer_choice_spreads_layers_like_distilbert():
    assert layer_choice(12, 6) == [0, 2, 4, 7, 9, 11]
    assert layer_choice(6, 3) == [0, 2, 5]
    assert layer_choice(4, 4) == [0, 1, 2, 3]
    assert layer_choice(5, 1) == [0]
    with pytest.raises(ConfigError, match="deeper than its teacher"):
        layer_choice(6, 7)


CASES = [("tiny-bert", "masked-lm"), ("tiny-bert", "sequence-classification"), ("tiny-roberta", "token-classification"),
         ("tiny-gpt2", "causal-lm"), ("tiny-bart", "seq2seq-lm"), ("tiny-t5", "seq2seq-lm")]


@pytest.mark.parametrize("preset,task", CASES)
def test_a_student_as_deep_as_its_teacher_is_the_teacher(preset, task):
    teacher = build_model(presets.get(preset), task).eval()
    depth = teacher.config.n_layers
    student, init = make_student(teacher, student_config(teacher.config, depth))
    student.eval()
    assert init["copied"] == init["total"]
    ids = torch.randint(5, teacher.config.vocab_size, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "seq2seq-lm":
        inputs["decoder_input_ids"] = ids[:, :4]
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, teacher(**inputs).logits)


def test_a_half_depth_student_takes_evenly_spaced_teacher_layers():
    teacher = build_model(presets.get("tiny-bart").replace(n_layers=4, n_decoder_layers=3))
    config = student_config(teacher.config)  # default: half, rounded up
    assert (config.n_layers, config.decoder_layers) == (2, 2)
    student, init = make_student(teacher, config)
    assert init["layers"] == {"encoder": [0, 3], "decoder": [0, 2]}
    for stack, chosen in init["layers"].items():
        for mine, theirs in enumerate(chosen):
            ours = getattr(student, stack).blocks[mine].state_dict()
            source = getattr(teacher, stack).blocks[theirs].state_dict()
            assert all(torch.equal(ours[k], source[k]) for k in ours)
    assert torch.equal(student.embed.weight, teacher.embed.weight)


def test_student_configs_must_fit_the_teacher(tmp_path):
    teacher = presets.get("tiny-bert")
    deeper = tmp_path / "deep.json"
    deeper.write_text(teacher.replace(n_layers=teacher.n_layers + 1).to_json())
    with pytest.raises(ConfigError, match="deeper than its teacher"):
        student_config(teacher, config_file=deeper)
    other_vocab = tmp_path / "vocab.json"
    other_vocab.write_text(teacher.replace(vocab_size=teacher.vocab_size + 1).to_json())
    with pytest.raises(ConfigError, match="same vocabulary"):
        student_config(teacher, config_file=other_vocab)
    narrow = tmp_path / "narrow.json"
    narrow.write_text(teacher.replace(d_model=32, n_heads=2, d_ff=64, n_layers=1).to_json())
    model = build_model(teacher, "masked-lm")
    student, init = make_student(model, student_config(teacher, config_file=narrow))
    assert 0 < init["copied"] < init["total"]  # norms of matching size copied, matrices left random
    with pytest.raises(ConfigError, match="deeper than its teacher"):
        student_config(teacher, layers=teacher.n_layers + 1)


def test_objective_follows_the_teachers_head_and_names_the_one_that_works():
    assert objective_for("masked-lm") == "mlm"
    assert objective_for("causal-lm") == "clm"
    assert objective_for("seq2seq-lm") == "seq2seq"
    assert objective_for("token-classification") == "task"
    with pytest.raises(ConfigError, match="use --objective task"):
        objective_for("sequence-classification", "mlm")
    with pytest.raises(ConfigError, match="no head to distil from.*--objective task"):
        objective_for("embedding")


# ---- the report ------------------------------------------------------------------------------------------------
def test_report_ratios_come_from_the_two_models():
    torch.manual_seed(0)
    teacher = build_model(presets.get("tiny-bert"), "sequence-classification").eval()
    student, _ = make_student(teacher, student_config(teacher.config, 1))
    ids = torch.randint(5, teacher.config.vocab_size, (6, 12))
    batches = [{"input_ids": ids[:3], "labels": torch.tensor([0, 1, 1])},
               {"input_ids": ids[3:], "labels": torch.tensor([1, 0, 0])}]
    report = distillation_report(teacher, student, batches, speed_batches=2, rounds=1)
    assert report["parameter_ratio"] == student.num_parameters() / teacher.num_parameters() < 1
    with torch.no_grad():
        correct = sum(int((m(**b).logits.argmax(-1) == b["labels"]).sum()) for b in batches for m in [teacher])
    assert report["teacher_quality"] == correct / 6
    assert report["quality_ratio"] == pytest.approx(report["student_quality"] / report["teacher_quality"])
    assert report["speedup"] == pytest.approx(report["student_sequences_per_s"] / report["teacher_sequences_per_s"])
    assert report["speed_sequences"] == 6
    assert "parameters" in format_report(report) and "accuracy" in format_report(report)
    # masked positions only count for masked-LM quality
    mlm = build_model(presets.get("tiny-bert"), "masked-lm").eval()
    labels = torch.full((1, 12), -100)
    labels[0, 4] = int(ids[0, 4])
    scores, _ = compare_quality(mlm, mlm, [{"input_ids": ids[:1], "labels": labels}])
    with torch.no_grad():
        hit = int(mlm(ids[:1]).logits[0, 4].argmax() == ids[0, 4])
    assert scores["accuracy"] == hit


@pytest.mark.parametrize("preset,task", [("tiny-gpt2", "causal-lm"), ("tiny-t5", "seq2seq-lm"),
                                         ("tiny-roberta", "token-classification")])
def test_a_copy_of_the_teacher_has_no_soft_or_hidden_loss(preset, task):
    config = presets.get(preset).replace(dropout=0.0, attention_dropout=0.0)
    teacher = build_model(config, task).eval()
    student, _ = make_student(teacher, student_config(teacher.config, teacher.config.n_layers))
    ids = torch.randint(5, config.vocab_size, (2, 6))
    labels = ids.clone() if task != "token-classification" else torch.randint(0, config.num_labels, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss, parts = DistillationLoss(teacher, LossWeights())(student.eval(), batch)
    assert parts["soft"] == pytest.approx(0.0, abs=1e-6) and parts["cos"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(2.0 * parts["hard"], rel=1e-5) and parts["hard"] > 0
    loss.backward()  # gradients reach the student, never the frozen teacher
    assert student.embed.weight.grad is not None and teacher.embed.weight.grad is None
