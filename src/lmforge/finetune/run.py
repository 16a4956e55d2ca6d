"""`finetune(...)`: one fine-tuning run, from a checkpoint or from scratch, through the training loop.

    result = finetune("runs/sst2", FinetuneRequest("classify", "sst2.train.txt", "sst2.dev.txt", checkpoint="minilm/",
                                                   settings={"max_steps": 400, "batch_size": 32, "lr": 1e-4}))
    result.metrics["accuracy"], result.model_path, result.wall_s, result.energy_kwh

The run folder `out` holds what `Trainer` writes (metrics.jsonl, checkpoints/{last,best}, summary.json,
final/ = the last step) plus model/: the best checkpoint by the validation metric (accuracy, entity F1,
BLEU or validation loss), a normal lmforge checkpoint with the label map and a fine-tuning model card (a
LoRA run writes adapter/ instead: PEFT's adapter_config.json + adapter_model.safetensors and the card),
and finetune.json (the run: task, starting point, data, settings, metrics, time, energy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..checkpoint.adapter import save_adapter
from ..errors import ConfigError
from ..models.lora import LoraSettings, add_lora, trainable_parameters
from ..train import BestCheckpoint, Callback, EnergyMeter, Trainer, TrainSettings, seed_everything
from ..train.callbacks import TimeBudget
from ..checkpoint.atomic import write_text
from ..train.result import RunCard, TrainResult, training_card
from ..train.run_folder import RunFolder
from .scoring import batch_metrics
from .batching import LengthGroupedBatches, sorted_batches
from .defaults import size_defaults
from .model import build_task_model, load_model, resolve_source
from .tasks import TASKS, DataOptions, read_task_data, subset, task_spec

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"  # LoRA runs: the adapter folder instead of a whole model
RUN_FILE = "finetune.json"
# Fine-tuning defaults (linear decay, light weight decay); lr, warmup_steps and batch_size follow the
# model's size (defaults.size_defaults) unless given.
DEFAULT_SETTINGS = {"max_steps": 500, "schedule": "linear",
                    "min_lr_ratio": 0.0, "weight_decay": 0.01, "beta2": 0.999, "eval_every": 100, "eval_batches": 0,
                    "save_every": 0, "log_every": 10}

Files = str | Path | Sequence[str | Path]


@dataclass
class FinetuneResult:
    """What a run produced: the best validation metrics, the saved checkpoint and the cost."""

    metrics: dict  # validation metrics of the best checkpoint (empty without validation data)
    model_path: Path  # out/model, or out/adapter for a LoRA run
    best_step: int | None
    steps: int
    wall_s: float
    energy_kwh: float
    co2_kg: float
    energy_source: str
    summary: dict  # the Trainer's summary
    starting_point: str  # what was copied and what is new
    warning: str | None = None  # e.g. the validation metric never left the majority-class level


class EarlyStopping(Callback):
    """Stop when `metric` has not improved for `patience` evaluations in a row."""

    def __init__(self, metric: str, mode: str, patience: int):
        if patience < 1:
            raise ConfigError(f"patience must be >= 1 evaluation, got {patience}")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.best: float | None = None
        self.waited = 0

    def on_evaluate(self, trainer, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.request_stop(f"{self.metric} did not improve for {self.patience} evaluations")

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.waited = state.get("best"), state.get("waited", 0)


@dataclass
class FinetuneRequest:
    """What a fine-tuning run asks for; `finetune(out, request)` runs it.

    Fine-tune for `task` (classify, tag, seq2seq, clm) on the `train` file(s), selecting the best checkpoint
    on `valid` (seq2seq: [source, target] files or one .jsonl). Start from `checkpoint` (folder or loaded
    model; backbone copied, new head initialised), or from random weights with `from_scratch` (the
    checkpoint's or `preset`'s architecture; `tokenizer` folder or the checkpoint's). `settings`:
    TrainSettings or a dict overriding DEFAULT_SETTINGS. `patience`: stop after that many evaluations without
    improvement. `max_valid_examples`: validate on that many random examples (a cap on evaluation time).
    `time_budget`: stop after that many seconds of wall time (the same budget for a pretrained and a
    from-scratch arm). `best_metric` overrides the task's (accuracy, f1, bleu, eval_loss). `lora`: train
    low-rank adapters on a frozen base instead of every weight (tensors the run initialises, such as a new
    head, are trained in full).

    Each field with flag metadata is one `lmforge finetune` flag (lmforge.commands.flags.add_dataclass_flags);
    `settings`, `data` and `lora` get theirs from TrainSettings, DataOptions and LoraSettings, `country` from
    the energy flags."""

    task: str = field(metadata={"required": True, "choices": tuple(TASKS), "help": "classify | tag | seq2seq | clm"})
    train: Files = field(metadata={"required": True, "nargs": "+", "metavar": "FILE",
                                   "help": "training data (seq2seq: SOURCE TARGET files, or one .jsonl)"})
    valid: Files | None = field(default=None, metadata={"nargs": "+", "metavar": "FILE",
                                                        "help": "validation data, read like --train"})
    checkpoint: str | Path | object | None = field(default=None, metadata={  # a folder or a loaded model
        "flag": "--from", "exclusive": "start", "required": True, "metavar": "CHECKPOINT",
        "help": "an lmforge or Hugging Face folder"})
    preset: str | None = field(default=None, metadata={
        "exclusive": "start", "required": True, "help": "a named architecture (needs --from-scratch and --tokenizer)"})
    from_scratch: bool = field(default=False, metadata={"help": "random weights (the baseline)"})
    tokenizer: str | Path | object | None = field(default=None, metadata={  # a folder or a Tokenizer
        "metavar": "DIR", "help": "tokenizer folder (default: the checkpoint's)"})
    settings: TrainSettings | dict | None = field(default=None, metadata={"flag": False})  # over DEFAULT_SETTINGS
    data: DataOptions = field(default_factory=DataOptions, metadata={"flag": False})
    max_train_examples: int | None = field(default=None, metadata={"metavar": "N",
                                                                   "help": "train on N random examples"})
    max_valid_examples: int | None = field(default=None, metadata={
        "metavar": "N", "help": "validate on N random examples (a cap on the time each evaluation takes)"})
    patience: int | None = field(default=None, metadata={"metavar": "N",
                                                         "help": "stop after N evaluations without improvement"})
    time_budget: float | None = field(default=None, metadata={"metavar": "SECONDS",
                                                              "help": "stop after this much wall time"})
    best_metric: str | None = field(default=None, metadata={
        "help": "metric that selects model/ (default: accuracy, f1, bleu, eval_loss)"})
    max_new_tokens: int = field(default=64, metadata={"help": "seq2seq: tokens generated for BLEU (default 64)"})
    country: str | None = field(default=None, metadata={"flag": False})
    lora: LoraSettings | None = field(default=None, metadata={"flag": False})


def finetune(out: str | Path, request: FinetuneRequest, *, overwrite: bool = False, use_codecarbon: bool = False,
             progress: bool = True) -> FinetuneResult:
    """Run the fine-tuning `request` in folder `out` (new or empty, or with `overwrite` an earlier fine-tuning
    run): the best checkpoint by the validation metric becomes out/model (a LoRA run: out/adapter, a PEFT-format
    adapter folder). Returns a `FinetuneResult`."""
    task, spec = request.task, task_spec(request.task)
    folder = RunFolder(out, "finetune")
    folder.open(overwrite=overwrite)
    out = folder.path
    settings = request.settings
    given = settings.to_dict() if isinstance(settings, TrainSettings) else dict(settings or {})
    metric = request.best_metric or spec.metric
    source = resolve_source(request.checkpoint, request.preset, request.from_scratch, request.tokenizer)
    tok = source.tokenizer
    train_data = read_task_data(task, request.train, tok, None, request.data, source.config)
    labels = train_data.labels  # classify, tag: from the training file; None for seq2seq and clm
    seed_everything(given.get("seed", 0))  # the new head (or the whole from-scratch model) depends on the seed only
    start = build_task_model(task, source, labels, request.from_scratch)
    model = start.model
    parameters = sum(p.numel() for p in model.parameters())  # before adapters: the size the defaults follow
    settings = settings.validate() if isinstance(settings, TrainSettings) else _settings(given, parameters)
    if request.lora is not None:
        if request.from_scratch or source.model is None:
            raise ConfigError("LoRA adapts pretrained weights; start from a checkpoint (--from DIR) without "
                              "--from-scratch, or leave out --lora-r")
        add_lora(model, request.lora, trainable=start.initialised)
    train_examples = subset(train_data, request.max_train_examples, settings.seed).examples
    valid_examples = subset(read_task_data(task, request.valid, tok, labels, request.data, source.config),
                            request.max_valid_examples, settings.seed, "--max-valid-examples").examples \
        if request.valid is not None else None
    padding = tok.padding_id

    def train_batches(micro: int, rank: int, world: int):
        return LengthGroupedBatches(train_examples, micro, padding, seed=settings.seed, rank=rank, world_size=world)

    def eval_batches():
        return sorted_batches(valid_examples, max(settings.batch_size, 32), padding)

    def eval_fn(forward_model, batches, trainer):
        scores = batch_metrics(trainer.model, task, batches, max_new_tokens=request.max_new_tokens)
        return {k: v for k, v in scores.items() if isinstance(v, (int, float))}

    callbacks = []
    if request.patience is not None:
        callbacks.append(EarlyStopping(metric, spec.mode, request.patience))
    if request.time_budget is not None:
        callbacks.append(TimeBudget(request.time_budget))
    settings = settings.updated({"best_metric": metric, "best_mode": "min" if metric.endswith("loss") else spec.mode})
    run = {"task": task, "head": spec.head, "starting_point": start.report(), "checkpoint": _name(request.checkpoint),
           "preset": request.preset, "from_scratch": request.from_scratch, "train": _names(request.train),
           "valid": _names(request.valid), "train_examples": len(train_examples),
           "valid_examples": len(valid_examples or []), "labels": labels.names if labels is not None else None,
           "settings": settings.to_dict(), "patience": request.patience, "time_budget_s": request.time_budget,
           "lora": request.lora.to_dict() if request.lora is not None else None,
           "trainable_parameters": trainable_parameters(model)}
    card = _card(run)
    trainer = Trainer(model, settings, train_batches, eval_batches if valid_examples else None, out_dir=out,
                      eval_fn=eval_fn, callbacks=callbacks, card=card, progress=progress,
                      energy=EnergyMeter(request.country, use_codecarbon=use_codecarbon))
    folder.start()
    with folder.refusals_leave_nothing(new=True):
        result = trainer.fit()
    finished = _finish(out, trainer, result, run, card)
    if spec.warning is not None and valid_examples:
        finished.warning = spec.warning(finished.metrics, valid_examples, labels, settings.lr, parameters)
    return finished


def _card(run: dict) -> RunCard:
    """The fine-tuning facts of the model card, from the run record (finetune.json)."""
    return RunCard(training_type="fine-tuning", objective=f"{run['task']} ({run['head']})",
                   data=f"{', '.join(run['train'])} ({run['train_examples']:,} examples)",
                   description=f"Fine-tuned by `lmforge finetune` for {run['task']} from "
                               f"{run['checkpoint'] or run['preset']}{' (random weights)' if run['from_scratch'] else ''}.")


def _settings(given: dict, parameters: int) -> TrainSettings:
    """The user's values over DEFAULT_SETTINGS and the learning rate, warm-up and batch size that follow the
    model's size (`size_defaults`); `TrainSettings.from_dict` applies the one warm-up rule."""
    steps = TrainSettings.from_dict(given, defaults=DEFAULT_SETTINGS).max_steps
    return TrainSettings.from_dict(given, defaults={**DEFAULT_SETTINGS, **size_defaults(parameters, steps)})


def _finish(out: Path, trainer: Trainer, result: TrainResult, run: dict, card: RunCard) -> FinetuneResult:
    """Save the best checkpoint (else the last) as out/model (a LoRA run: out/adapter) with a fine-tuning card,
    and write finetune.json."""
    best = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint)), None)
    chosen = out / "checkpoints" / ("best" if best is not None and best.best is not None else "last")
    metrics = dict(best.best_metrics) if best is not None and best.best_step is not None else dict(trainer.last_eval)
    model = load_model(chosen)
    facts = training_card(card, result, metrics)
    if getattr(model, "lora_settings", None) is not None:
        model_path = save_adapter(model, out / ADAPTER_DIR, base=run["checkpoint"] and _base_path(run["checkpoint"]),
                                  card=facts)
    else:
        model_path = model.save(out / MODEL_DIR, card=facts)
    summary = result.summary()
    finished = FinetuneResult(metrics=metrics, model_path=model_path, best_step=best.best_step if best else None,
                              steps=result.steps, wall_s=result.wall_s, energy_kwh=result.energy_kwh,
                              co2_kg=result.co2_kg, energy_source=result.energy_source, summary=summary,
                              starting_point=run["starting_point"])
    record = {**run, "best_step": finished.best_step, "metrics": metrics, "steps": result.steps,
              "stopped_early": result.stopped_early, "wall_s": summary["wall_s"], "energy_kwh": result.energy_kwh,
              "co2_kg": result.co2_kg, "energy_source": result.energy_source, "model": str(finished.model_path)}
    write_text(out / RUN_FILE, json.dumps(record, indent=2) + "\n")
    return finished


def _base_path(checkpoint: str) -> str:
    """The base as an absolute folder path (so the adapter folder finds it from anywhere)."""
    return str(Path(checkpoint).resolve()) if Path(checkpoint).is_dir() else checkpoint



def _name(checkpoint) -> str | None:
    if checkpoint is None or isinstance(checkpoint, (str, Path)):
        return None if checkpoint is None else str(checkpoint)
    return checkpoint.config.name or "a loaded model"


def _names(files: Files | None) -> list[str]:
    if files is None:
        return []
    return [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
