"""Data parallel training on CPU with gloo: 2 processes (DDP, or FSDP) reach the weights of 1 process
that trains on the same global batches; only rank 0 writes the run folder."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.train import Callback, Distributed, Trainer, TrainSettings
from train_helpers import patterned_rows, tiny_gpt, token_factory

SETTINGS = dict(max_steps=6, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1, eval_every=3, eval_batches=2,
                save_every=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StopAfter(Callback):
    """Ends the run after `step` (as an interruption would, but at a known step)."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, trainer, record):
        if record["step"] == self.step:
            trainer.request_stop("test interruption")


def train_rank(rank: int, world: int, port: int, fsdp: bool, out: str, stop_after: int = 0,
               resume: bool = False, precision: str = "fp32") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = patterned_rows()
        trainer = Trainer(tiny_gpt(bias=False), TrainSettings(**SETTINGS, precision=precision), token_factory(rows),
                          lambda: token_factory(rows[:8])(4, 0, 1), out_dir=out, dist=Distributed.from_env("cpu"),
                          fsdp=fsdp, progress=False, callbacks=[StopAfter(stop_after)] if stop_after else [])
        trainer.fit(resume=resume)
    finally:
        dist.destroy_process_group()


def single_process(out, precision: str = "fp32") -> Trainer:
    rows = patterned_rows()
    trainer = Trainer(tiny_gpt(bias=False), TrainSettings(**SETTINGS, precision=precision), token_factory(rows),
                      lambda: token_factory(rows[:8])(4, 0, 1), out_dir=out, progress=False)
    trainer.fit()
    return trainer


def final_weights(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, fsdp):
    reference = single_process(tmp_path / "one")
    mp.spawn(train_rank, args=(2, free_port(), fsdp, str(tmp_path / "two")), nprocs=2, join=True)
    two = final_weights(tmp_path / "two")
    one = final_weights(tmp_path / "one")
    assert two.keys() == one.keys()
    worst = max(float((two[k] - one[k]).abs().max()) for k in one)
    assert worst <= 1e-5, worst
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
    state = json.loads((tmp_path / "two" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 6
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["tokens"] == reference.tokens == 6 * 8 * 16


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_process_run_stopped_and_resumed_equals_the_uninterrupted_run(tmp_path, fsdp):
    mp.spawn(train_rank, args=(2, free_port(), fsdp, str(tmp_path / "whole")), nprocs=2, join=True)
    mp.spawn(train_rank, args=(2, free_port(), fsdp, str(tmp_path / "split"), 4), nprocs=2, join=True)
    state = json.loads((tmp_path / "split" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 4  # stopped there, sharded optimizer state gathered into the checkpoint
    mp.spawn(train_rank, args=(2, free_port(), fsdp, str(tmp_path / "split"), 0, True), nprocs=2, join=True)
    whole, split = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    worst = max(float((whole[k] - split[k]).abs().max()) for k in whole)
    assert worst == 0.0, worst
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_train_in_bf16_like_one(tmp_path, fsdp):
    """DDP all-reduces the bf16 working copy's gradients (FSDP keeps per-op autocast): the run follows the
    single-process bf16 run to bf16 rounding, and the saved master weights are float32."""
    single_process(tmp_path / "one", precision="bf16")
    mp.spawn(train_rank, args=(2, free_port(), fsdp, str(tmp_path / "two"), 0, False, "bf16"), nprocs=2, join=True)
    two, one = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    assert {t.dtype for t in two.values()} == {torch.float32}
    worst = max(float((two[k] - one[k]).abs().max()) for k in one)
    print(f"largest weight difference {worst:.2e}; losses {losses(tmp_path / 'two')} vs {losses(tmp_path / 'one')}")
    assert worst <= 2e-2, worst
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=2e-2)
