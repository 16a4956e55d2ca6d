import math

import pytest
import torch

from lmforge.eval import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics


def test_classification_metrics_by_hand():
    metrics = ClassificationMetrics({0: "neg", 1: "pos"})
    metrics.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    metrics.update(torch.tensor([1]), torch.tensor([1]))
    result = metrics.compute()
    assert result["accuracy"] == pytest.approx(3 / 4)
    # neg: P=1, R=1/2, F1=2/3; pos: P=2/3, R=1, F1=4/5
    assert result["per_class"]["neg"]["f1"] == pytest.approx(2 / 3)
    assert result["per_class"]["pos"]["f1"] == pytest.approx(4 / 5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_entity_metrics_match_seqeval_definition():
    metrics = EntityMetrics()
    gold = [["B-person", "I-person", "O", "B-location"]]
    predicted = [["B-person", "I-person", "O", "O"]]
    metrics.update(predicted, gold)
    result = metrics.compute()
    assert result["precision"] == 1.0 and result["recall"] == 0.5
    assert result["f1"] == pytest.approx(2 / 3)


def test_generation_metrics():
    metrics = GenerationMetrics(rouge=True)
    metrics.update(["a dog runs in the park"], ["a dog runs in the park"])
    result = metrics.compute()
    assert result["bleu"] == pytest.approx(100.0) and result["rouge1"] == pytest.approx(1.0)
    other = GenerationMetrics()
    other.update(["completely different words here"], ["a dog runs in the park"])
    assert other.compute()["bleu"] < 5


def test_language_model_metrics_weight_by_tokens():
    metrics = LanguageModelMetrics()
    metrics.update(2.0, 10)
    metrics.update(4.0, 30)
    result = metrics.compute()
    assert result["loss"] == pytest.approx(3.5)
    assert result["perplexity"] == pytest.approx(math.exp(3.5))
