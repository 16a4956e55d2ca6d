"""LoRA through the training loop: exact resume, DDP (gloo, 2 processes) equal to one process, bf16 autocast,
and the base weights never move."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_train_distributed import StopAfter, free_port
from train_helpers import patterned_rows, tiny_gpt, token_factory

import lmforge
from lmforge.models.lora import LoraSettings, add_lora, lora_layers
from lmforge.train import Distributed, Trainer, TrainSettings

SETTINGS = dict(max_steps=8, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, eval_every=4, eval_batches=2,
                save_every=2)
LORA = LoraSettings(r=4, alpha=8.0, dropout=0.1, targets=("q", "v", "down"))


def lora_gpt(dropout: float):
    model = tiny_gpt(bias=False, dropout=dropout)
    torch.manual_seed(1)
    add_lora(model, LoraSettings(**{**LORA.to_dict(), "dropout": dropout}))
    return model


def trainer_for(out, stop_after: int = 0, precision: str = "fp32", dist_=None, dropout: float = 0.1) -> Trainer:
    rows = patterned_rows()
    return Trainer(lora_gpt(dropout), TrainSettings(**{**SETTINGS, "precision": precision}), token_factory(rows),
                   lambda: token_factory(rows[:8])(4, 0, 1), out_dir=out, progress=False, dist=dist_,
                   callbacks=[StopAfter(stop_after)] if stop_after else [])


def test_an_interrupted_lora_run_resumes_exactly(tmp_path):
    whole = trainer_for(tmp_path / "whole")
    whole.fit()
    trainer_for(tmp_path / "cut", stop_after=4).fit()
    resumed = trainer_for(tmp_path / "cut")
    resumed.fit(resume=True)
    expected, got = load_file(str(tmp_path / "whole" / "final" / "model.safetensors")), \
        load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert set(expected) == set(got) and any(".lora." in name for name in got)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    base = tiny_gpt(bias=False, dropout=0.1).state_dict()
    assert all(torch.equal(base[name], got[name]) for name in base)  # only adapters were trained
    assert any(not torch.equal(got[name], torch.zeros_like(got[name])) for name in got if name.endswith(".B"))
    reloaded = lmforge.load(tmp_path / "cut" / "final")  # a checkpoint with adapters rebuilds them
    assert {n for n in lora_layers(reloaded)} == {n for n in lora_layers(resumed.model)}


def test_bf16_autocast_trains_the_adapters_in_fp32(tmp_path):
    trainer = trainer_for(tmp_path / "bf16", precision="bf16")
    summary = trainer.fit()
    assert summary["steps"] == SETTINGS["max_steps"] and summary["skipped_nonfinite"] == 0
    pairs = [p for layer in lora_layers(trainer.model).values() for p in layer.lora.values()]
    assert all(p.A.dtype == torch.float32 and p.B.abs().sum() > 0 for p in pairs)
    bf16 = tiny_gpt(bias=False, dropout=0.1)
    add_lora(bf16, LORA)
    bf16.load_state_dict(trainer.model.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()  # a bf16 model with adapters runs and agrees with fp32
    ids = patterned_rows()[:4]
    with torch.no_grad():
        full = trainer.model.eval()(ids).logits
        half = bf16(ids).logits.float()
    assert (half - full).abs().max() < 0.05 * full.abs().max()


def train_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer_for(out, dist_=Distributed.from_env("cpu"), dropout=0.0).fit()
    finally:
        dist.destroy_process_group()


def test_two_ddp_processes_train_the_same_adapters_as_one(tmp_path):
    trainer_for(tmp_path / "one", dropout=0.0).fit()  # no dropout: each rank has its own dropout stream
    mp.spawn(train_rank, args=(2, free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert set(one) == set(two)
    worst = max((one[n] - two[n]).abs().max().item() for n in one)
    assert worst < 1e-5  # the same global batches, summed in another order
