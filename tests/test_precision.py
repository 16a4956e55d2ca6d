"""Reduced precision and compilation on the CPU: bf16 autocast training, bf16 models, torch.compile.

The GPU paths (fp16 with a gradient scaler, bf16 SDPA kernels) need a CUDA device; these tests
cover what a CPU can check: the same code paths with the CPU's bf16 support."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge import load
from lmforge.errors import ConfigError
from lmforge.train import Trainer, TrainSettings
from train_helpers import patterned_rows, tiny_gpt, token_factory


def settings(**changes) -> TrainSettings:
    base = dict(max_steps=30, batch_size=8, lr=1e-2, warmup_steps=3, log_every=5, eval_every=30, save_every=0,
                eval_batches=2)
    return TrainSettings(**{**base, **changes}).validate()


def losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


def fit(tmp_path, name: str, dropout: float = 0.0, **changes):
    rows = patterned_rows()
    trainer = Trainer(tiny_gpt(dropout=dropout), settings(**changes), token_factory(rows), lambda: token_factory(rows[:16])(8, 0, 1),
                      out_dir=tmp_path / name, progress=False)
    trainer.fit()
    return trainer, losses(tmp_path / name)


def test_bf16_autocast_training_learns_like_fp32_and_keeps_fp32_weights(tmp_path):
    _, full = fit(tmp_path, "fp32")
    trainer, half = fit(tmp_path, "bf16", precision="bf16")
    assert half[-1] < half[0] - 1.0  # it learns
    assert abs(half[-1] - full[-1]) < 0.25 * full[0]  # and about as well as full precision
    assert half != full  # bf16 really ran: its rounding changes the curve
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    saved = load(tmp_path / "bf16" / "final")
    assert saved.dtype == torch.float32


def test_bf16_runs_on_a_bf16_working_copy_of_the_fp32_master_weights(tmp_path):
    trainer, _ = fit(tmp_path, "bf16", precision="bf16", max_steps=6, dropout=0.1)
    work = trainer.working.module
    assert {p.dtype for p in work.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    for (name, main), (_, copy) in zip(trainer.model.named_parameters(), work.named_parameters()):
        assert copy.equal(main.detach().to(torch.bfloat16)), name  # refreshed after the last step
        assert copy.grad is None and main.grad is None


def test_bf16_resume_is_bitwise_identical(tmp_path):
    rows = patterned_rows()

    def trainer(name: str, steps: int) -> Trainer:
        return Trainer(tiny_gpt(dropout=0.1), settings(precision="bf16", max_steps=steps, schedule="constant",
                                                       save_every=4, eval_every=0, log_every=1),
                       token_factory(rows), out_dir=tmp_path / name, progress=False)

    straight = trainer("straight", 8)
    straight.fit()
    trainer("broken", 4).fit()
    resumed = trainer("broken", 8)
    resumed.fit(resume=True)
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert a.equal(b), name
    assert losses(tmp_path / "straight") == losses(tmp_path / "broken")


def test_frozen_weights_are_cast_once_and_get_no_master_gradient():
    model = tiny_gpt()
    model.embed.weight.requires_grad_(False)
    trainer = Trainer(model, settings(precision="bf16", max_steps=3), token_factory(patterned_rows()), progress=False)
    trainer.fit()
    assert model.embed.weight.grad is None
    assert all(main.requires_grad for main, _ in trainer.working.trained)
    assert len(trainer.working.trained) == sum(1 for p in model.parameters() if p.requires_grad)


def test_fp16_on_cpu_is_refused_with_the_alternative():
    rows = patterned_rows()
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU; use --precision bf16 or fp32"):
        Trainer(tiny_gpt(), settings(precision="fp16"), token_factory(rows), progress=False)


def test_bf16_model_matches_hugging_face_in_bf16(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    ours = lmforge.load(tmp_path).eval().to(torch.bfloat16)
    hf = hf.to(torch.bfloat16)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = hf(ids).logits.float(), ours(ids).logits.float()
    assert got.dtype == torch.float32 and ours.dtype == torch.bfloat16
    scale = expected.abs().max()
    assert (got - expected).abs().max() < 0.05 * scale  # bf16 keeps about 3 significant digits
    new = ours.generate(ids[:1], max_new_tokens=6, eos_token_id=[])  # the cache takes the model's dtype
    assert new.shape == (1, 18)


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tmp_path):
    _, eager = fit(tmp_path, "eager", max_steps=10, log_every=1)
    _, compiled = fit(tmp_path, "compiled", max_steps=10, log_every=1, compile=True)
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-3)
