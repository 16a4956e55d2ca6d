"""The training loop on simple token tensors: learning, schedule, decay groups, accumulation, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge import load
from lmforge.errors import ConfigError
from lmforge.train import Trainer, TrainSettings, TrainingError
from lmforge.train.optim import learning_rate, no_decay_names, parameter_groups
from train_helpers import patterned_rows, tiny_gpt, token_factory


def settings(**changes) -> TrainSettings:
    base = dict(max_steps=30, batch_size=8, lr=1e-2, warmup_steps=3, log_every=5, eval_every=10, save_every=10,
                eval_batches=2)
    return TrainSettings(**{**base, **changes}).validate()


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    rows = patterned_rows()
    trainer = Trainer(tiny_gpt(), settings(), token_factory(rows), lambda: token_factory(rows[:16])(8, 0, 1),
                      out_dir=tmp_path, progress=False)
    summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert train[-1]["loss"] < train[0]["loss"] - 1.0  # random init starts near ln(97) = 4.57
    assert evals[-1]["eval_ppl"] == pytest.approx(math.exp(evals[-1]["eval_loss"]))
    assert summary["tokens"] == 30 * 8 * 16 and summary["steps"] == 30
    assert summary["energy_kwh"] > 0 and summary["co2_kg"] > 0
    final = load(tmp_path / "final")
    card = (tmp_path / "final" / "README.md").read_text()
    assert "co2_eq_emissions" in card and "emissions:" in card
    torch.testing.assert_close(final.state_dict(), trainer.model.state_dict(), rtol=0, atol=0)
    assert (tmp_path / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert load(tmp_path / "checkpoints" / "best") is not None


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = tiny_gpt()
    exempt = no_decay_names(model)
    assert "embed.weight" in exempt and "decoder.positions.weight" in exempt
    assert all(name in exempt for name, p in model.named_parameters() if p.dim() == 1)
    assert "decoder.blocks.0.self_attn.q.weight" not in exempt
    decay, plain = parameter_groups(model, 0.1)
    assert plain["weight_decay"] == 0.0
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(plain["params"]) == n_unique


def test_schedule_warmup_then_cosine_or_linear_decay():
    s = settings(max_steps=100, warmup_steps=10, lr=0.5, min_lr_ratio=0.1)
    assert learning_rate(0, s) == pytest.approx(0.05)
    assert learning_rate(9, s) == pytest.approx(0.5)
    assert learning_rate(55, s) == pytest.approx(0.275)  # cosine midpoint between 0.5 and 0.05
    assert learning_rate(100, s) == pytest.approx(0.05)
    linear = settings(max_steps=100, warmup_steps=10, lr=0.5, min_lr_ratio=0.0, schedule="linear")
    assert learning_rate(55, linear) == pytest.approx(0.25)


def test_gradient_accumulation_equals_the_full_batch():
    rows = patterned_rows()
    full = Trainer(tiny_gpt(bias=False), settings(max_steps=4, eval_every=0, save_every=0), token_factory(rows),
                   progress=False)
    accumulated = Trainer(tiny_gpt(bias=False), settings(max_steps=4, eval_every=0, save_every=0, grad_accum=4),
                          token_factory(rows), progress=False)
    full.fit()
    accumulated.fit()
    torch.testing.assert_close(accumulated.model.state_dict(), full.model.state_dict(), rtol=1e-5, atol=1e-6)


def test_clipping_returns_the_norm_before_and_bounds_it_after():
    rows = patterned_rows()
    trainer = Trainer(tiny_gpt(), settings(clip_norm=0.01), token_factory(rows), progress=False)
    batch = next(iter(trainer.source))
    trainer.model(**batch).loss.backward()
    before = trainer.shards.clip_grad_norm(0.01)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()
                                                  if p.grad is not None]))
    assert before > 0.05 and float(after) == pytest.approx(0.01, rel=1e-3)


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path):
    rows = patterned_rows()

    def poisoned(model, batch, calls=[0]):
        calls[0] += 1
        loss = model(**batch).loss
        return loss * float("nan") if calls[0] == 7 else loss

    trainer = Trainer(tiny_gpt(), settings(max_steps=10, save_every=5, eval_every=0), token_factory(rows),
                      loss_fn=poisoned, out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match=r"step 7: the loss is nan; the last good checkpoint is .*last"):
        trainer.fit()
    assert json.loads((tmp_path / "checkpoints" / "last" / "trainer_state.json").read_text())["step"] == 5


def test_skip_nonfinite_counts_skips(tmp_path):
    rows = patterned_rows()

    def poisoned(model, batch, calls=[0]):
        calls[0] += 1
        loss = model(**batch).loss
        return loss * float("inf") if calls[0] in (3, 4) else loss

    trainer = Trainer(tiny_gpt(), settings(max_steps=6, skip_nonfinite=True, eval_every=0, log_every=1),
                      token_factory(rows), loss_fn=poisoned, out_dir=tmp_path, progress=False)
    summary = trainer.fit()
    assert summary["skipped_nonfinite"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_nonfinite"] for r in records if "skipped_nonfinite" in r] == [1, 2]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_invalid_settings_are_clear():
    with pytest.raises(ConfigError, match="lr must be in"):
        TrainSettings(lr=-1).validate()
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainSettings.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="does not split over 2 process"):
        TrainSettings(batch_size=3).micro_batch_size(2)
