"""The pretraining-recipe ablation: one change at a time -> validation MLM loss at the budget -> fine-tuned accuracy.

    OMP_NUM_THREADS=1 python examples/pretrain_ablation.py --work runs/ablation --steps 400 --variant bert
    python examples/pretrain_ablation.py --work runs/ablation --table      # print the table of every variant run

Every variant pretrains the demo's 4 x 128 encoder on the demo corpus (Python standard-library docstrings,
WordPiece 4,000) for the same number of optimizer steps (a STEP budget, one thread, so that runs made while
the machine is shared stay comparable), then fine-tunes it on 16 labelled docstrings per package (8 packages)
for 120 steps at lr 1e-3 and reports test accuracy. Results are appended to WORK/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lmforge import presets
from lmforge.data import MaskedLM, TokenShards, prepare_corpus
from lmforge.demo.stdlib_corpus import build_task
from lmforge.eval.evaluate import evaluate
from lmforge.finetune import DataOptions, FinetuneRequest, finetune
from lmforge.models import build_model
from lmforge.tokenizer import train_tokenizer
from lmforge.train import Trainer, TrainSettings, seed_everything
from lmforge.train.pretraining import ShardBatches, fit_config_to_tokenizer
from lmforge.train.recipe import RECIPES

BERT = {"norm_placement": "post", "final_norm": False, "bias": True, "dropout": 0.1, "attention_dropout": 0.1}
BERT_SETTINGS = {"lr": 1e-3, "schedule": "cosine", "min_lr_ratio": 0.1, "weight_decay": 0.01, "beta2": 0.98,
}
SMALL = RECIPES["small-budget"]
PRE_NO_BIAS = {k: v for k, v in SMALL.architecture.items() if k not in ("positions", "classifier_pool")}
# variant -> (architecture changes, settings, mask probability); each row changes one thing from the row it names
VARIANTS = {
    "bert": (BERT, BERT_SETTINGS, 0.15),  # the demo before this work: post-LN BERT, 15%, cosine to 10%
    "prenorm": ({**BERT, "norm_placement": "pre", "final_norm": True}, BERT_SETTINGS, 0.15),
    "prenorm-nobias-nodropout": (PRE_NO_BIAS, BERT_SETTINGS, 0.15),
    "+linear-to-zero": (PRE_NO_BIAS, {**BERT_SETTINGS, "schedule": "linear", "min_lr_ratio": 0.0}, 0.15),
    "+mask30": (PRE_NO_BIAS, {**BERT_SETTINGS, "schedule": "linear", "min_lr_ratio": 0.0}, 0.30),
    "+mask40": (PRE_NO_BIAS, {**BERT_SETTINGS, "schedule": "linear", "min_lr_ratio": 0.0}, 0.40),
    "+mask30-lr2e-3": (PRE_NO_BIAS, {**BERT_SETTINGS, "schedule": "linear", "min_lr_ratio": 0.0, "lr": 2e-3},
                       0.30),
    "+rotary-meanpool": (SMALL.architecture, {**BERT_SETTINGS, "schedule": "linear", "min_lr_ratio": 0.0}, 0.30),
    "bert-lr5e-4": (BERT, {**BERT_SETTINGS, "lr": 5e-4}, 0.15),
}


def prepare(work: Path):
    """The demo's corpus, tokenizer, shards and a 16-per-class labelled task, built once."""
    data = work / "data"
    if not (data / "shards").is_dir():
        task = build_task(train_per_label=16)
        data.mkdir(parents=True, exist_ok=True)
        corpus = data / "pretrain.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in task.pretrain_texts), encoding="utf-8")
        for name, rows in (("train", task.train), ("valid", task.valid), ("test", task.test)):
            (data / f"{name}.jsonl").write_text("".join(json.dumps({"label": l, "text": t}) + "\n" for l, t in rows),
                                                encoding="utf-8")
        tokenizer = train_tokenizer("wordpiece", 4000, [corpus])
        prepare_corpus([corpus], tokenizer, data / "shards", valid_fraction=0.05, progress=False)
    return data, TokenShards(data / "shards")


def run_variant(name: str, steps: int, work: Path) -> dict:
    architecture, settings_values, mask = VARIANTS[name]
    data, shards = prepare(work)
    config = presets.bert_like(d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=128, name="ablation")
    config = fit_config_to_tokenizer(config.replace(**architecture), shards.tokenizer, vocab_from_data=True)
    seed_everything(0)
    model = build_model(config, "masked-lm")
    model.tokenizer = shards.tokenizer
    objective = MaskedLM(shards.tokenizer, probability=mask)
    eval_objective = MaskedLM(shards.tokenizer, probability=0.15)  # one yardstick for every variant
    settings = TrainSettings(max_steps=steps, batch_size=32, seq_len=128, eval_every=0, eval_batches=16,
                             save_every=0, log_every=max(steps // 20, 1), warmup_steps=max(1, steps // 16),
                             **settings_values)
    out = work / name
    trainer = Trainer(model, settings, lambda m, r, w: ShardBatches(shards, objective, m, 128, r, w),
                      lambda: ShardBatches(shards, eval_objective, 32, 128, split="valid", shuffle=False),
                      out_dir=out, loss_fn=MaskedLM.loss, progress=False)
    started = time.perf_counter()
    summary = trainer.fit()
    pretrain_s = time.perf_counter() - started
    options = DataOptions(max_length=128)
    result = finetune(out / "finetune", FinetuneRequest("classify", data / "train.jsonl", data / "valid.jsonl",
                                                        checkpoint=out / "final",
                                                        settings={"max_steps": 120, "batch_size": 32, "lr": 1e-3,
                                                                  "warmup_steps": 12, "eval_every": 20},
                                                        data=options), overwrite=True, progress=False)
    test = evaluate(result.model_path, data / "test.jsonl", "classify", data_options=options)
    row = {"variant": name, "steps": steps, "mask": mask, "eval_mlm_loss_15": summary.get("eval_loss"),
           "valid_accuracy": result.metrics.get("accuracy"), "test_accuracy": test["accuracy"],
           "pretrain_s": round(pretrain_s, 1), "threads": torch.get_num_threads()}
    with open(work / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(work: Path) -> str:
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| change | steps | mask | validation MLM loss (15% masks) | fine-tuned test accuracy |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['steps']} | {r['mask']:.2f} | {r['eval_mlm_loss_15']:.3f} | {r['test_accuracy']:.3f} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--variant", choices=list(VARIANTS), action="append")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    for name in args.variant or []:
        print(json.dumps(run_variant(name, args.steps, args.work)), flush=True)
    if args.table:
        print(table(args.work))


if __name__ == "__main__":
    main()
