"""Fine-tuning: a checkpoint's backbone under a new task head (or the same architecture from scratch),
trained on labelled data with the `Trainer`, keeping the best checkpoint by the task's validation metric.

tasks     the four tasks (classify, tag, seq2seq, clm): head, metric, data files, scorer
scorers   each task's validation metrics from model outputs; scoring: `batch_metrics`
model     `resolve_source` + `build_task_model`: weights copied, new head initialised and reported
batching  length-grouped training batches, length-sorted evaluation batches
run       `finetune(out, FinetuneRequest(...))` -> `FinetuneResult` (metrics, model path, time, energy); early stopping, time budget
"""

from .model import Source, StartingPoint, build_task_model, resolve_source
from .run import DEFAULT_SETTINGS, EarlyStopping, FinetuneRequest, FinetuneResult, TimeBudget, finetune
from .tasks import TASKS, DataOptions, read_task_data

__all__ = ["finetune", "FinetuneRequest", "FinetuneResult", "DEFAULT_SETTINGS", "EarlyStopping", "TimeBudget", "build_task_model",
           "resolve_source", "Source", "StartingPoint", "TASKS", "DataOptions", "read_task_data"]
