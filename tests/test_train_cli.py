"""`lmforge pretrain` bad input, and energy accounting that never breaks training."""

from __future__ import annotations

import json
import time

import pytest

from lmforge.cli import main
from lmforge.train.carbon import EnergyMeter
from test_train_resume import write_shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    write_shards(folder, "bpe")
    return folder


def pretrain(data, out, *extra) -> int:
    return main(["pretrain", "--preset", "tiny-gpt2", "--data", str(data / "shards"), "--out", str(out),
                 "--max-steps", "4", "--batch-size", "2", "--seq-len", "32", "--warmup-steps", "1",
                 "--save-every", "2", "--eval-every", "2", "--eval-batches", "1", "--quiet", "--no-codecarbon",
                 *extra])


def error_of(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_a_small_run_then_refusals(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(data, out) == 0  # tiny-gpt2 has 512 tokens >= the tokenizer's 300
    assert "final checkpoint" in capsys.readouterr().out
    before = (out / "final" / "model.safetensors").read_bytes()

    assert pretrain(data, out) == 2
    assert "already holds a run; pass --resume" in error_of(capsys)
    assert pretrain(data, out, "--lr", "1e-3", "--resume") == 2
    assert "these differ" in error_of(capsys)
    assert (out / "final" / "model.safetensors").read_bytes() == before  # nothing touched by refusals

    assert pretrain(data, out, "--overwrite", "--max-steps", "2") == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_bad_inputs_are_one_line_errors(data, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert pretrain(data, foreign) == 2
    assert "holds no lmforge run" in error_of(capsys)
    assert (foreign / "notes.txt").read_text() == "mine"

    assert main(["pretrain", "--preset", "tiny-gpt2", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "a"), "--quiet"]) == 2
    assert "not a prepared corpus" in error_of(capsys)

    assert pretrain(data, tmp_path / "b", "--lr", "5") == 2
    assert "lr must be in (0, 1)" in error_of(capsys)
    assert pretrain(data, tmp_path / "c", "--seq-len", "1000") == 2
    assert "exceeds the model's max_positions" in error_of(capsys)
    assert pretrain(data, tmp_path / "d", "--objective", "mlm") == 2
    assert "objective mlm trains an encoder model" in error_of(capsys)
    assert pretrain(data, tmp_path / "e", "--resume") == 2
    assert "nothing to resume" in error_of(capsys)


def test_vocabulary_mismatch_is_refused_or_fitted(data, tmp_path, capsys):
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"family": "decoder", "vocab_size": 100, "d_model": 16, "n_heads": 2,
                                 "n_layers": 1, "d_ff": 32, "max_positions": 32}))
    args = ["pretrain", "--config", str(small), "--data", str(data / "shards"), "--max-steps", "1",
            "--batch-size", "2", "--seq-len", "16", "--warmup-steps", "0", "--quiet", "--no-codecarbon"]
    assert main(args + ["--out", str(tmp_path / "x")]) == 2
    assert "tokenizer has 300 tokens but the model's vocab_size is 100" in error_of(capsys)
    assert main(args + ["--out", str(tmp_path / "y"), "--vocab-from-data"]) == 0


def test_energy_meter_falls_back_when_codecarbon_fails(monkeypatch):
    import codecarbon

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no sensors here")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Broken)
    meter = EnergyMeter("FRA")
    meter.start()
    time.sleep(0.05)
    reading = meter.stop()
    assert reading.source == "estimate" and reading.kwh > 0 and reading.kg_co2 > 0
    assert "no sensors here" in meter.problem


def test_energy_meter_does_not_wait_for_a_stalled_tracker(monkeypatch):
    import codecarbon

    class Stalled:
        def __init__(self, *args, **kwargs):
            time.sleep(30)

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Stalled)
    meter = EnergyMeter(timeout_s=0.5)
    started = time.perf_counter()
    meter.start()
    assert time.perf_counter() - started < 5
    assert meter.stop().source == "estimate"


def test_codecarbon_offline_measures_a_run():
    meter = EnergyMeter("USA")
    meter.start()
    sum(i * i for i in range(2_000_000))
    reading = meter.stop()
    assert reading.source == "codecarbon", meter.problem
    assert reading.kwh > 0 and reading.kg_co2 > 0 and reading.country == "USA"
