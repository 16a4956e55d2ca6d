"""ELECTRA replaced-token detection (`lmforge pretrain --objective rtd`): the discriminator's labels, where
gradients flow, what the generator's loss covers, that both losses fall on real text, that the saved
discriminator is an ordinary encoder (fine-tunes, exports), DDP (gloo) and exact resume, and bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lmforge
from lmforge.cli import main
from lmforge.data import ReplacedTokenDetection, TokenShards
from lmforge.labels import IGNORE_INDEX
from lmforge.models.electra import ElectraPretraining, generator_config, replaced_labels, sample_tokens
from lmforge.train.pretraining import fit_config_to_tokenizer
from test_train_resume import environment, last_logged_step, records, write_shards

DATA = Path(__file__).parents[2] / "shared" / "data"
SENTIMENT_WORDS = "the king queen speaks to a lord of france and england my good friend will come".split()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("rtd"), "wordpiece")


@pytest.fixture(scope="module")
def tokenizer(shards):
    return TokenShards(shards).tokenizer


def tiny_electra(tokenizer, seed: int = 0, **options) -> ElectraPretraining:
    torch.manual_seed(seed)
    config = fit_config_to_tokenizer(lmforge.presets.get("tiny-bert"), tokenizer, vocab_from_data=True)
    config = config.replace(dropout=0.0, attention_dropout=0.0)
    return ElectraPretraining.build(config, **options)


def batch_of(tokenizer, rows: int = 4, length: int = 24, seed: int = 0) -> dict:
    """An RTD batch of real corpus windows (ragged, so the batch has padding)."""
    rng = np.random.default_rng(seed)
    vocab = np.setdiff1d(np.arange(tokenizer.vocab_size), sorted(tokenizer.special_ids))
    windows = [rng.choice(vocab, size=length - 2 * (row % 2)) for row in range(rows)]
    return ReplacedTokenDetection(tokenizer)(windows, np.random.default_rng(seed))


# ---- inputs and labels ---------------------------------------------------------------------------------------
def test_the_objective_masks_like_electra_and_scores_real_non_special_tokens(tokenizer):
    objective = ReplacedTokenDetection(tokenizer, probability=0.15)
    batch = batch_of(tokenizer, rows=8, length=40)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    special = torch.from_numpy(np.isin(ids.numpy(), sorted(tokenizer.special_ids)))
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~mask).any()
    original = torch.where(chosen, labels, ids)
    assert torch.equal(batch["detection_mask"], mask & ~torch.from_numpy(np.isin(original.numpy(),
                                                                                 sorted(tokenizer.special_ids))))
    assert not batch["detection_mask"][special & (ids != tokenizer.mask_id)].any()
    # chosen positions show [MASK] or stay as they were: the generator's samples are the only replacements
    assert ((ids[chosen] == tokenizer.mask_id) | (ids[chosen] == labels[chosen])).all()
    per_row = chosen.sum(1).float() / batch["detection_mask"].sum(1).float()
    assert ((per_row - 0.15).abs() < 0.05).all()
    masked = kept = 0
    for seed in range(40):
        b = objective([np.arange(5, 105)], np.random.default_rng(seed))
        c = b["labels"] != IGNORE_INDEX
        masked += int((b["input_ids"][c] == tokenizer.mask_id).sum())
        kept += int((b["input_ids"][c] == b["labels"][c]).sum())
    assert abs(masked / (masked + kept) - 0.85) < 0.05
    again = ReplacedTokenDetection(tokenizer)([np.arange(5, 45)], np.random.default_rng(3))
    assert int(again["sample_seed"]) == int(objective([np.arange(5, 45)], np.random.default_rng(3))["sample_seed"])


def test_replaced_labels_count_a_sample_equal_to_the_original_as_original():
    original = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 14, 3, 0, 0]])
    corrupted = torch.tensor([[2, 10, 99, 12, 3, 0], [2, 13, 14, 3, 0, 0]])  # row 0: one replaced
    scored = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert replaced_labels(original, corrupted, scored).tolist() == [[-100, 0, 1, 0, -100, -100],
                                                                     [-100, 0, 0, -100, -100, -100]]


def test_a_generator_that_samples_the_original_replaces_nothing(tokenizer):
    """A generator certain of the original token at every masked position samples it back: every label is
    'original' although ~15% of the positions were masked and sampled."""
    model = tiny_electra(tokenizer).eval()
    batch = batch_of(tokenizer)
    token = int(batch["labels"][batch["labels"] != IGNORE_INDEX][0])
    batch["labels"][batch["labels"] != IGNORE_INDEX] = token
    with torch.no_grad():
        model.generator.head.bias.fill_(-1e4)
        model.generator.head.bias[token] = 1e4
    out = model(**batch)
    scored = batch["detection_mask"]
    assert (out.detection_labels[scored] == 0).all() and (out.detection_labels[~scored] == IGNORE_INDEX).all()
    assert out.replaced_fraction == 0.0 and (batch["labels"] != IGNORE_INDEX).sum() >= 4
    assert torch.equal(out.corrupted_ids[batch["labels"] != IGNORE_INDEX],
                       batch["labels"][batch["labels"] != IGNORE_INDEX])


def test_labels_follow_the_corrupted_text_and_sampling_is_seeded(tokenizer):
    model = tiny_electra(tokenizer).eval()
    batch = batch_of(tokenizer, rows=6, length=40)
    chosen = batch["labels"] != IGNORE_INDEX
    original = torch.where(chosen, batch["labels"], batch["input_ids"])
    out = model(**batch)
    assert torch.equal(out.corrupted_ids[~chosen], original[~chosen])  # only masked positions change
    expected = (out.corrupted_ids != original).long().masked_fill(~batch["detection_mask"], IGNORE_INDEX)
    assert torch.equal(out.detection_labels, expected)
    assert 0 < out.replaced_fraction < 0.2  # an untrained generator replaces almost every masked token
    assert torch.equal(model(**batch).corrupted_ids, out.corrupted_ids)  # the batch's seed fixes the samples
    batch["sample_seed"] = batch["sample_seed"] + 1
    assert not torch.equal(model(**batch).corrupted_ids, out.corrupted_ids)
    draws = torch.stack([sample_tokens(torch.tensor([[0.0, math.log(3.0)]]), seed) for seed in range(4000)])
    assert abs(float(draws.float().mean()) - 0.75) < 0.03  # softmax([0, ln 3]) = [0.25, 0.75]


# ---- gradients and losses ------------------------------------------------------------------------------------
def test_no_gradient_flows_through_sampling_and_the_embedding_learns_from_both(tokenizer):
    model = tiny_electra(tokenizer)
    batch = batch_of(tokenizer)
    out = model(**batch)
    out.discriminator_loss.backward(retain_graph=True)
    generator_only = dict(model.generator.named_parameters())
    assert generator_only and all(p.grad is None for p in generator_only.values())  # nothing through the samples
    embedding = model.discriminator.embed.weight
    from_discriminator = embedding.grad.clone()
    assert from_discriminator.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    out.generator_loss.backward()
    assert embedding.grad.abs().sum() > 0  # the generator reads and predicts through the shared embedding
    assert all(p.grad is None for p in model.discriminator.encoder.parameters())
    assert all(p.grad is None for p in model.detector.parameters())
    assert all(p.grad is not None for p in generator_only.values())
    torch.testing.assert_close(out.loss, out.generator_loss + 50.0 * out.discriminator_loss)


def test_the_generator_loss_covers_masked_positions_only(tokenizer):
    model = tiny_electra(tokenizer).eval()
    batch = batch_of(tokenizer, rows=5, length=30)
    chosen = batch["labels"] != IGNORE_INDEX
    out = model(**batch)
    embeds = model.discriminator.embed(batch["input_ids"])
    every = torch.ones_like(chosen)
    logits = model.generator(embeds, batch["attention_mask"], every, model.discriminator.embed.weight)
    logits = logits.reshape(*chosen.shape, -1)  # (B, T, V) at every position
    reference = F.cross_entropy(logits[chosen], batch["labels"][chosen])
    torch.testing.assert_close(out.generator_loss, reference)
    noisy = logits + 5.0 * torch.randn_like(logits) * (~chosen).unsqueeze(-1)  # unmasked positions changed
    torch.testing.assert_close(F.cross_entropy(noisy[chosen], batch["labels"][chosen]), out.generator_loss)
    full = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.where(chosen, batch["labels"],
                           batch["input_ids"]).reshape(-1))
    assert not torch.isclose(full, out.generator_loss)  # scoring every position would be another loss


def test_generator_sizes_and_a_generator_wider_than_its_discriminator_is_refused(tokenizer):
    config = lmforge.presets.get("bert-base-uncased")
    small = generator_config(config, 0.25)
    assert (small.d_model, small.n_heads, small.head_dim, small.d_ff, small.n_layers) == (192, 3, 64, 768, 12)
    assert generator_config(config, 1.0).d_model == 768
    for scale in (1.5, 0.0, -1.0):
        with pytest.raises(lmforge.errors.ConfigError, match="--generator-scale"):
            generator_config(config, scale)


# ---- the command: checkpoints, fine-tuning, export, resume, DDP ------------------------------------------------
def rtd_command(shards: Path, out: Path, *extra: str, steps: int = 30) -> list[str]:
    return [sys.executable, "-m", "lmforge", "pretrain", "--preset", "tiny-bert", "--vocab-from-data",
            "--objective", "rtd", "--data", str(shards), "--out", str(out), "--max-steps", str(steps),
            "--batch-size", "4", "--seq-len", "32", "--lr", "3e-3", "--warmup-steps", "3", "--log-every", "1",
            "--eval-every", "10", "--eval-batches", "2", "--save-every", "5", "--quiet", "--no-codecarbon", *extra]


@pytest.fixture(scope="module")
def finished_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rtd-run") / "run"
    subprocess.run(rtd_command(shards, out, "--recipe", "standard"), env=environment(), check=True, timeout=300)
    return out


def test_the_saved_checkpoint_is_the_discriminator_as_an_ordinary_encoder(finished_run, tokenizer):
    final = lmforge.load(finished_run / "final")
    assert final.config.family == "encoder" and final.task == "embedding"
    last = finished_run / "checkpoints" / "last"
    assert lmforge.load(last).state_dict().keys() == final.state_dict().keys()
    parts = load_file(str(last / "training_parts.safetensors"))
    assert any(k.startswith("generator.") for k in parts) and any(k.startswith("detector.") for k in parts)
    assert not any("generator" in k for k in load_file(str(finished_run / "final" / "model.safetensors")))
    run = json.loads((finished_run / "run.json").read_text())
    assert run["objective"] == "rtd" and run["generator"] == {"scale": 0.25, "weight": 50.0}
    assert run["objective_options"] == {"probability": 0.15}
    logged = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    evals = [r for r in logged if "eval_loss" in r]
    assert all({"generator_loss", "discriminator_loss", "discriminator_accuracy"} <= r.keys() for r in steps)
    assert all({"eval_generator_loss", "eval_discriminator_loss", "eval_discriminator_accuracy"} <= r.keys()
               for r in evals)
    for record in steps:
        assert record["loss"] == pytest.approx(record["generator_loss"] + 50 * record["discriminator_loss"], rel=1e-5)


def test_resume_refuses_another_generator(finished_run, capsys):
    before = (finished_run / "final" / "model.safetensors").read_bytes()
    assert main(["pretrain", "--out", str(finished_run), "--resume", "--generator-scale", "0.5", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--generator-scale 0.5 (run has 0.25)" in error and len(error.splitlines()) == 1
    assert (finished_run / "final" / "model.safetensors").read_bytes() == before


def test_the_discriminator_fine_tunes_and_exports(finished_run, tmp_path):
    import random

    rng = random.Random(0)
    for name, count in (("train", 48), ("valid", 16)):
        lines = []
        for i in range(count):
            words = rng.sample(SENTIMENT_WORDS, 5) + [rng.choice(["love", "peace"] if i % 2 else ["hate", "war"])]
            rng.shuffle(words)
            lines.append(f"{i % 2} {' '.join(words)}")
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "lmforge", "finetune", "--from", str(finished_run / "final"),
                           "--task", "classify", "--train", str(tmp_path / "train.txt"), "--valid",
                           str(tmp_path / "valid.txt"), "--out", str(tmp_path / "clf"), "--max-steps", "6",
                           "--quiet", "--no-codecarbon"], env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tensors copied" in done.stdout + done.stderr
    classifier = lmforge.load(tmp_path / "clf" / "model")
    assert classifier.task == "sequence-classification"
    encoder = lmforge.load(finished_run / "final")

    transformers = pytest.importorskip("transformers")
    assert main(["convert", str(finished_run / "final"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([encoder.tokenizer.encode("the king speaks to a lord of france")])
    with torch.no_grad():
        ours = encoder.eval()(ids).hidden_states
        theirs = hf(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_a_killed_rtd_run_resumes_bitwise_identically(shards, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    subprocess.run(rtd_command(shards, straight, steps=40), env=environment(), check=True, timeout=300)
    process = subprocess.Popen(rtd_command(shards, broken, steps=40), env=environment())
    deadline = time.monotonic() + 240
    while last_logged_step(broken) < 13 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    checkpoint_step = json.loads((broken / "checkpoints/last/trainer_state.json").read_text())["step"]
    assert 10 <= checkpoint_step < 40
    subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(broken), "--resume", "--quiet",
                    "--no-codecarbon"], env=environment(), check=True, timeout=300)
    for key in ("loss", "generator_loss", "discriminator_loss", "eval_generator_loss"):
        assert records(broken, key) == records(straight, key), key
    for folder, name in (("final", "model.safetensors"), ("checkpoints/last", "model.safetensors"),
                         ("checkpoints/last", "training_parts.safetensors")):
        a, b = load_file(str(straight / folder / name)), load_file(str(broken / folder / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), (folder, name)


def ddp_rank(rank: int, world: int, port: int, shards: str, out: str, stop_after: int, resume: bool) -> None:
    """One rank of a 2-process RTD run wired as `lmforge pretrain` wires it; writes its whole weights."""
    import torch.distributed as dist

    from lmforge.data import TokenShards as Shards
    from lmforge.train import Distributed, TrainSettings
    from lmforge.train.pretrain import shard_trainer
    from lmforge.train.pretraining import ShardSources, build_objective, objective_loss, pretraining_model
    from test_train_distributed import StopAfter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = Shards(shards)
        config = fit_config_to_tokenizer(lmforge.presets.get("tiny-bert"), data.tokenizer, vocab_from_data=True)
        torch.manual_seed(0)
        model = pretraining_model("rtd", config, {"scale": 0.25, "weight": 50.0})
        model.saved_model.attach_tokenizer(data.tokenizer)
        sources = ShardSources(data, build_objective("rtd", "encoder", data.tokenizer), 32, seed=0)
        settings = TrainSettings(max_steps=6, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1, eval_every=3,
                                 eval_batches=1, save_every=3)
        trainer = shard_trainer(model, sources, settings, Path(out), dist=Distributed.from_env("cpu"),
                                loss_fn=objective_loss("rtd"), progress=False,
                                callbacks=[StopAfter(stop_after)] if stop_after else [])
        trainer.fit(resume=resume)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_rtd_in_step_and_resume_exactly(shards, tmp_path):
    import torch.multiprocessing as mp

    from test_train_distributed import free_port

    whole, split = tmp_path / "whole", tmp_path / "split"
    mp.spawn(ddp_rank, args=(2, free_port(), str(shards), str(whole), 0, False), nprocs=2, join=True)
    ranks = [torch.load(whole / f"rank{r}.pt") for r in (0, 1)]
    assert any(k.startswith("generator.") for k in ranks[0])
    assert all(ranks[0][k].equal(ranks[1][k]) for k in ranks[0])  # generator and discriminator kept in step
    start = tiny_electra(TokenShards(shards).tokenizer).state_dict()
    assert all(not ranks[0][k].equal(start[k]) for k in ranks[0] if k.startswith("generator.encoder.blocks"))
    mp.spawn(ddp_rank, args=(2, free_port(), str(shards), str(split), 4, False), nprocs=2, join=True)
    assert json.loads((split / "checkpoints" / "last" / "trainer_state.json").read_text())["step"] == 4
    mp.spawn(ddp_rank, args=(2, free_port(), str(shards), str(split), 0, True), nprocs=2, join=True)
    resumed = torch.load(split / "rank0.pt")
    assert all(resumed[k].equal(ranks[0][k]) for k in resumed)  # bitwise
    assert records(split, "generator_loss") == records(whole, "generator_loss")


# ---- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (("--preset", "tiny-gpt2", "--objective", "rtd"), "use --objective clm"),
    (("--preset", "tiny-bart", "--objective", "rtd"), "use --objective span or denoise"),
    (("--preset", "tiny-bert", "--objective", "rtd", "--generator-scale", "1.5"), "wider than its discriminator"),
    (("--preset", "tiny-bert", "--objective", "rtd", "--generator-scale", "0"), "give a value in (0, 1]"),
    (("--preset", "tiny-bert", "--objective", "rtd", "--generator-scale", "nan"), "not a share of the discriminator"),
    (("--preset", "tiny-bert", "--objective", "rtd", "--discriminator-weight", "-1"), "must be positive"),
    (("--preset", "tiny-bert", "--objective", "mlm", "--generator-scale", "0.5"), "applies to --objective rtd"),
    (("--preset", "tiny-bert", "--objective", "rtd", "--fsdp"), "drop --fsdp"),
])
def test_bad_rtd_requests_are_one_line_errors(shards, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    code = main(["pretrain", "--vocab-from-data", "--data", str(shards), "--out", str(out), "--max-steps", "2",
                 "--quiet", "--no-codecarbon", *extra])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1, error
    assert not out.exists() or not any(out.iterdir())


def test_a_tokenizer_without_a_mask_token_is_refused(tmp_path, capsys):
    shards = write_shards(tmp_path, "bpe", documents=40)
    code = main(["pretrain", "--preset", "tiny-bert", "--vocab-from-data", "--objective", "rtd", "--data", str(shards),
                 "--out", str(tmp_path / "run"), "--quiet", "--no-codecarbon"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "replaced-token detection needs a mask token" in error and len(error.splitlines()) == 1


# ---- real text -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "pretrain" / "tinyshakespeare.txt").is_file(),
                    reason="../shared/data is absent (fresh clone)")
def test_both_losses_fall_on_real_text(tmp_path):
    """On Shakespeare the generator's masked-LM loss ends below the corpus's unigram entropy (it uses context,
    not only word counts) and the discriminator's loss falls from chance (ln 2) to at most the entropy of
    the replaced share (what knowing only how often tokens are replaced scores)."""
    from lmforge.data import prepare_corpus
    from lmforge.tokenizer import train_tokenizer

    text = (DATA / "pretrain" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:400_000]
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    tokenizer = train_tokenizer("wordpiece", 1000, [tmp_path / "corpus.txt"])
    prepare_corpus([tmp_path / "corpus.txt"], tokenizer, tmp_path / "shards", valid_fraction=0.05, progress=False)
    shards = TokenShards(tmp_path / "shards")
    counts = np.bincount(np.asarray(shards.split("train")), minlength=tokenizer.vocab_size)
    frequencies = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(frequencies * np.log(frequencies)).sum())
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny-bert", "--vocab-from-data", "--objective", "rtd", "--data",
                 str(tmp_path / "shards"), "--out", str(out), "--recipe", "small-budget", "--mask-probability",
                 "0.15", "--generator-scale", "0.5", "--lr", "3e-3", "--max-steps", "400", "--batch-size", "16",
                 "--seq-len", "64", "--eval-every", "50", "--eval-batches", "8", "--log-every", "1", "--quiet",
                 "--no-codecarbon"]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps, evals = [r for r in logged if "loss" in r], [r for r in logged if "eval_generator_loss" in r]
    first, last = evals[0], evals[-1]
    assert last["eval_generator_loss"] < first["eval_generator_loss"] - 0.2, (first, last)
    assert last["eval_generator_loss"] < unigram_entropy, (last, unigram_entropy)
    assert steps[0]["discriminator_loss"] > 0.6  # chance: ln 2
    p = last["eval_replaced_fraction"]
    base_rate = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert last["eval_discriminator_loss"] < base_rate + 0.005, (last, base_rate)
