"""One write policy for every command's output, and runs that leave no dead ends (issue 19 items 1 and 5).

Every case runs the real CLI in a subprocess: a folder or file lmforge did not write is refused (exit 2,
one line naming the path) and left exactly as it was, --overwrite replaces only lmforge's own output
of the same kind, Ctrl-C and SIGKILL leave a folder that one instruction continues or replaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from finetune_helpers import labelled_files
from process_helpers import ctrl_c_default
from test_train_resume import ROOT, shards  # noqa: F401 (the shared corpus fixture)

def lmforge(*args, check_ok: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)
    if check_ok:
        assert done.returncode == 0, done.stderr
    return done


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(shards) -> Path:
    """A small corpus (corpus.txt), its BPE tokenizer (tok/), shards and a tiny decoder (arch.json)."""
    return shards


def pretrain_args(corpus: Path, out: Path, *extra) -> list:
    return ["pretrain", "--config", corpus / "arch.json", "--data", corpus / "shards", "--out", out,
            "--max-steps", "6", "--batch-size", "4", "--seq-len", "32", "--warmup-steps", "1", "--log-every", "1",
            "--eval-every", "3", "--eval-batches", "1", "--quiet", "--no-codecarbon", *extra]


def test_tokenizer_and_prepare_never_replace_what_lmforge_did_not_write(corpus, tmp_path):
    text = corpus / "corpus.txt"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    before = tree(tmp_path)
    for out in (mine, a_file):
        for extra in ([], ["--overwrite"]):
            refused(lmforge("tokenizer", "train", text, "--kind", "bpe", "--vocab-size", 300, "--out", out, *extra),
                    str(out))
            refused(lmforge("prepare", text, "--tokenizer", corpus / "tok", "--out", out, "--quiet", *extra),
                    str(out))
    assert tree(tmp_path) == before

    # their own kind: a rerun is refused, --overwrite replaces it
    tok = tmp_path / "tok"
    lmforge("tokenizer", "train", text, "--kind", "bpe", "--vocab-size", 300, "--out", tok, check_ok=True)
    refused(lmforge("tokenizer", "train", text, "--kind", "bpe", "--vocab-size", 300, "--out", tok), "--overwrite")
    lmforge("tokenizer", "train", text, "--kind", "bpe", "--vocab-size", 300, "--out", tok, "--overwrite",
            check_ok=True)
    shards = tmp_path / "shards"
    lmforge("prepare", text, "--tokenizer", tok, "--out", shards, "--quiet", check_ok=True)
    refused(lmforge("prepare", text, "--tokenizer", tok, "--out", shards, "--quiet"), "--overwrite")
    lmforge("prepare", text, "--tokenizer", tok, "--out", shards, "--quiet", "--overwrite", check_ok=True)
    # and never another kind: shards over a tokenizer, a tokenizer over shards
    before = tree(tmp_path)
    refused(lmforge("prepare", text, "--tokenizer", tok, "--out", tok, "--quiet", "--overwrite"), "tokenizer")
    refused(lmforge("tokenizer", "train", text, "--kind", "bpe", "--vocab-size", 300, "--out", shards,
                    "--overwrite"), "shards")
    assert tree(tmp_path) == before


def test_prepare_over_a_finetuned_checkpoint_is_refused_even_with_overwrite(corpus, tmp_path):
    data = labelled_files(tmp_path / "data")
    run = tmp_path / "run_clf"
    lmforge("finetune", "--preset", "tiny-bert", "--from-scratch", "--tokenizer", data["tok"], "--task", "classify",
            "--train", data["train"], "--valid", data["valid"], "--out", run, "--max-steps", "2", "--quiet",
            check_ok=True)
    before = tree(run)
    refused(lmforge("prepare", corpus / "corpus.txt", "--tokenizer", corpus / "tok", "--out", run / "model",
                    "--quiet", "--overwrite"), str(run / "model"), "checkpoint")
    refused(lmforge("convert", run / "model", run, "--overwrite"), str(run), "finetune")
    assert tree(run) == before
    # convert replaces a checkpoint it wrote only with --overwrite
    lmforge("convert", run / "model", tmp_path / "copy", check_ok=True)
    refused(lmforge("convert", run / "model", tmp_path / "copy"), "--overwrite")
    lmforge("convert", run / "model", tmp_path / "copy", "--overwrite", check_ok=True)


def test_evaluate_refuses_a_folder_or_a_foreign_file_before_evaluating(tmp_path):
    data = labelled_files(tmp_path / "data")
    theirs = tmp_path / "theirs.json"
    theirs.write_text('{"mine": 1}')
    before = tree(tmp_path)
    # the model does not even exist: the output is checked first, so nothing is computed in vain
    refused(lmforge("evaluate", "--model", tmp_path / "nowhere", "--data", data["valid"], "--out", tmp_path),
            "is a folder")
    refused(lmforge("evaluate", "--model", tmp_path / "nowhere", "--data", data["valid"], "--out", theirs,
                    "--overwrite"), str(theirs))
    assert tree(tmp_path) == before


def test_a_refused_pretrain_leaves_nothing_behind(corpus, tmp_path):
    bad = tmp_path / "bad_shards"
    bad.mkdir()
    for file in (corpus / "shards").rglob("*"):
        if file.is_file():
            target = bad / file.relative_to(corpus / "shards")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    index = json.loads((bad / "index.json").read_text())
    tokens = np.memmap(bad / "train.bin", dtype=index["dtype"], mode="r+")
    tokens[:] = 299 + 200  # ids beyond the model's 300-token vocabulary
    tokens.flush()
    del tokens
    out = tmp_path / "run"
    args = pretrain_args(corpus, out)
    args[args.index(corpus / "shards")] = bad
    refused(lmforge(*args), "vocabulary")
    assert not out.exists()
    out.mkdir()  # an empty folder given by the user stays, empty
    refused(lmforge(*args), "vocabulary")
    assert out.is_dir() and list(out.iterdir()) == []


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def start(args: list) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default)


def test_a_run_killed_before_its_first_checkpoint_gets_one_instruction(corpus, tmp_path):
    out = tmp_path / "run"
    process = start(pretrain_args(corpus, out, "--save-every", "1000", "--max-steps", "400"))
    wait_for(out / "metrics.jsonl", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "checkpoints" / "last").exists()
    plain = lmforge(*pretrain_args(corpus, out))
    refused(plain, "--resume")
    resumed = lmforge("pretrain", "--out", out, "--resume", "--quiet", "--no-codecarbon", check_ok=True)
    assert "from step 0" in resumed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 400
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 401))  # the restart's records only


def test_sigkill_leftovers_are_cleaned_by_a_successful_resume(corpus, tmp_path):
    """Checkpoints every step and kills at several moments: some land inside a checkpoint write, leaving
    hidden .tmp/.old folders; a resume cleans whatever was left and finishes the run."""
    out = tmp_path / "run"
    args = pretrain_args(corpus, out, "--save-every", "1", "--max-steps", "60", "--eval-every", "0")
    leftovers_seen = 0
    for attempt, delay in enumerate((0.3, 0.15, 0.05, 0.2)):
        process = start(args if attempt == 0 else ["pretrain", "--out", out, "--resume", "--quiet", "--no-codecarbon"])
        wait_for(out / "checkpoints" / "last", process)
        time.sleep(delay)
        if process.poll() is not None:
            break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        leftovers_seen += len(list((out / "checkpoints").glob(".*")))
    lmforge("pretrain", "--out", out, "--resume", "--quiet", "--no-codecarbon", check_ok=True)
    assert json.loads((out / "summary.json").read_text())["steps"] == 60
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))] == []


def test_a_checkpoint_caught_between_its_two_renames_is_put_back(corpus, tmp_path):
    """The moment a kill can leave no checkpoints/last at all: `last` moved aside to .last.*.old and the new
    one still in .last.*.tmp (the two renames of atomic_folder). The resume takes the moved-aside one."""
    out = tmp_path / "run"
    lmforge(*pretrain_args(corpus, out, "--save-every", "2", "--max-steps", "4"), check_ok=True)
    last = out / "checkpoints" / "last"
    step = json.loads((last / "trainer_state.json").read_text())["step"]
    os.replace(last, out / "checkpoints" / ".last.x1.old")  # exactly what atomic_folder's first rename does
    (out / "checkpoints" / ".last.x2.tmp").mkdir()  # the new folder, half-written
    (out / "checkpoints" / ".last.x2.tmp" / "model.safetensors").write_bytes(b"\0" * 10)
    (out / "summary.json").unlink()
    lmforge("pretrain", "--out", out, "--resume", "--quiet", "--no-codecarbon", check_ok=True)
    assert step == 4 and json.loads((last / "trainer_state.json").read_text())["step"] == 4
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_during_finetune_leaves_a_folder_overwrite_replaces(tmp_path):
    data = labelled_files(tmp_path / "data")
    out = tmp_path / "run"
    args = ["finetune", "--preset", "tiny-bert", "--from-scratch", "--tokenizer", data["tok"], "--task", "classify",
            "--train", data["train"], "--valid", data["valid"], "--out", out, "--quiet", "--log-every", "1"]
    process = start([*args, "--max-steps", "5000"])
    wait_for(out / "metrics.jsonl", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert (out / "metrics.jsonl").exists() and not (out / "finetune.json").exists()
    refused(lmforge(*args, "--max-steps", "2"), "--overwrite")
    lmforge(*args, "--max-steps", "2", "--overwrite", check_ok=True)
    assert json.loads((out / "finetune.json").read_text())["steps"] == 2
