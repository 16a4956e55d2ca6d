"""One training loop for pretraining, fine-tuning and distillation.

    trainer = Trainer(model, TrainSettings(max_steps=1000), batches=factory, eval_batches=eval_factory,
                      out_dir="runs/x")
    summary = trainer.fit(resume=False)

`batches(micro_batch_size, rank, world_size)` returns this rank's source of training batches: an
iterable of dicts fed to the loss hook (default `model(**batch).loss`); when one pass ends the loop
starts another. A source with `state_dict()` / `load_state_dict()` (a resumable sampler) is saved in
every checkpoint, which together with the model, optimizer, step and RNG states makes a resumed run
bitwise identical to an uninterrupted one on CPU. `eval_batches()` returns a fresh iterable of
evaluation batches each time it is called.

A hook may return `(loss, {name: float})`: those parts of the loss (averaged over accumulation steps and
ranks) are logged beside it, and evaluation reports them as `eval_<name>`. The trained module may be a
training wrapper (ELECTRA's generator + discriminator) with a `saved_model`, the model that checkpoints and
final/ hold, and `auxiliary_state_dict()` / `load_auxiliary_state_dict()` for its training-only weights,
which training checkpoints keep (training_parts.safetensors) for an exact resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from ..checkpoint.atomic import write_text
from ..checkpoint.io import WEIGHTS_FILE, load_weights, read_safetensors
from ..errors import CheckpointError, ConfigError, LmforgeError, TrainingInterrupted
from ..labels import IGNORE_INDEX
from ..models.weight_formats import INFERENCE_ONLY
from ..nn.quantized import has_int8_weights
from ..seeding import seed_everything
from .callbacks import BestCheckpoint, Callback
from .carbon import EnergyMeter
from .distributed import Distributed
from .host_memory import retained_heap
from .metrics_log import MetricsLog
from .result import RunCard, TrainResult, checkpoint_card, training_card
from .optim import build_optimizer, learning_rate, set_learning_rate
from .precision import WorkingCopy, check_precision
from .settings import TrainSettings
from .model_shards import ModelShards
from .state import join_optimizer_state, read_auxiliary_weights, read_training_state, rng_state, set_rng_state, \
    split_optimizer_state, write_training_checkpoint

Batch = dict[str, Any]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[nn.Module, Iterable[Batch], "Trainer"], dict[str, float]]


class TrainingError(LmforgeError):
    """Training cannot go on (non-finite loss, out of memory); the message names the last good checkpoint."""


def default_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's own loss for a batch that holds labels."""
    return model(**batch).loss


def loss_and_parts(result) -> tuple[torch.Tensor | None, dict[str, float]]:
    """A loss hook's result as (loss, named parts): a hook returns a loss, or (loss, {name: float})."""
    return result if isinstance(result, tuple) else (result, {})


def count_tokens(batch: Batch) -> int:
    """Input tokens of a batch: non-padding positions of attention_mask, else every input id."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


class Trainer:
    """Owns the loop; see the module docstring. Only rank 0 writes files."""

    def __init__(self, model: nn.Module, settings: TrainSettings, batches: Callable[[int, int, int], Iterable[Batch]],
                 eval_batches: Callable[[], Iterable[Batch]] | None = None, *, loss_fn: LossFn | None = None,
                 eval_fn: EvalFn | None = None, out_dir: str | Path | None = None,
                 callbacks: Iterable[Callback] = (), card: RunCard | dict | None = None, dist: Distributed | None = None,
                 fsdp: bool = False, energy: EnergyMeter | None = None, progress: bool = True):
        self.settings = settings.validate()
        self.dist = dist or Distributed()
        self.micro_batch = settings.micro_batch_size(self.dist.world_size)
        check_precision(settings.precision, self.dist.device)
        if has_int8_weights(model):
            raise ConfigError(f"{INFERENCE_ONLY}: this model holds int8 weights and cannot be trained; "
                              "load the checkpoint without dtype='int8' (or --dtype) to train it")
        if fsdp and hasattr(model, "saved_model"):
            raise ConfigError("FSDP cannot shard a training wrapper with training-only parts (an RTD generator); "
                              "drop --fsdp (data parallel training works)")
        self.model = model.to(self.dist.device)  # the master weights: float32 whatever the precision
        # bf16 runs forward/backward on a bf16 copy (sharded FSDP runs keep per-op autocast instead)
        sharded = fsdp and self.dist.enabled
        self.working = WorkingCopy(self.model, torch.bfloat16) \
            if settings.precision == "bf16" and not sharded else None
        self.wrapped = self.dist.wrap(self.working.module if self.working else self.model, fsdp)
        self.shards = ModelShards(self.model, self.wrapped, fsdp and self.dist.enabled)
        self.forward_model = torch.compile(self.wrapped) if settings.compile else self.wrapped
        self.optimizer = build_optimizer(self.model, settings)
        self.scaler = torch.amp.GradScaler("cuda") if settings.precision == "fp16" else None
        self.source = batches(self.micro_batch, self.dist.rank, self.dist.world_size)
        self.eval_batches, self.loss_fn, self.eval_fn = eval_batches, loss_fn or default_loss, eval_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        if self.out_dir is not None and eval_batches is not None:
            self.callbacks.append(BestCheckpoint(settings.best_metric, settings.best_mode))
        self.card = RunCard.of(card)
        self.energy = energy or EnergyMeter(use_codecarbon=False)
        self.progress = progress
        self.log = MetricsLog(self.out_dir / "metrics.jsonl" if self.out_dir else Path("-"),
                              enabled=self.out_dir is not None and self.dist.is_main)
        self.n_params = sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())
        # counters that a checkpoint carries
        self.step = 0
        self.tokens = 0
        self.skipped = 0
        self.elapsed_before = 0.0  # wall seconds of earlier (resumed-from) segments
        self.energy_before = {"kwh": 0.0, "kg_co2": 0.0}
        self.window = {"loss": 0.0, "steps": 0}  # training loss since the last log record
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.last_saved_step = 0
        self.stop_reason: str | None = None  # set by `request_stop` (early stopping, time budgets)
        self.step_parts: dict[str, float] = {}  # the loss hook's named parts at the last step
        self.segment_start = time.perf_counter()

    # ---- paths -------------------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        if self.out_dir is None:
            raise ConfigError("this trainer has no out_dir, so it cannot write checkpoints")
        return self.out_dir / "checkpoints" / name

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to `settings.max_steps` (continuing from checkpoints/last when `resume`), then write
        the final checkpoint and summary.json. Returns the `TrainResult`."""
        if resume:
            self.resume()
        else:
            seed_everything(self.settings.seed * 1000 + self.dist.rank)
        if self.working is not None:
            self.working.refresh()  # the master weights may have changed since the copy was made
        self.energy.start()
        started = time.perf_counter()
        self.segment_start = started
        batches = self._batch_stream()
        bar = self._progress_bar()
        self.wrapped.train()
        try:
            with retained_heap(self.dist.device.type == "cpu"):  # no fresh pages for each step's large tensors
                while self.step < self.settings.max_steps and self.stop_reason is None:
                    loss, grad_norm, tokens = self._train_step(batches)
                    self.step += 1
                    self.tokens += tokens
                    self._after_step(loss, grad_norm, bar)
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted_message()) from None
        finally:
            if bar is not None:
                bar.close()
        wall = self.elapsed_before + time.perf_counter() - started
        return self._finish(wall, time.perf_counter() - started)

    def _interrupted_message(self) -> str:
        """What Ctrl-C kept: the step of checkpoints/last and how to continue from it."""
        if self.last_checkpoint is None:
            return f"interrupted at step {self.step}, before the first checkpoint; nothing was saved"
        saved = self.last_saved_step
        return (f"interrupted at step {self.step}; the checkpoint of step {saved} ({self.last_checkpoint}) is kept: "
                "run the same command with --resume to continue from it")

    def _batch_stream(self) -> Iterator[Batch]:
        """Batches forever: a new pass over the source each time one ends."""
        while True:
            empty = True
            for batch in self.source:
                empty = False
                yield batch
            if empty:
                raise ConfigError("the training data yields no batches; give more data or a smaller batch_size")

    def _autocast(self):
        if self.settings.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.precision == "bf16" else torch.float16
        return torch.autocast(self.dist.device.type, dtype=dtype)

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.dist.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _train_step(self, batches: Iterator[Batch]) -> tuple[float, float, int]:
        """One optimizer step over `grad_accum` micro-batches; returns the global mean loss, the
        gradient norm and the global token count. Non-finite steps stop or are skipped."""
        s = self.settings
        set_learning_rate(self.optimizer, learning_rate(self.step, s))
        loss_sum = torch.zeros((), device=self.dist.device)
        tokens = 0
        parts: dict[str, float] = {}
        try:
            for micro in range(s.grad_accum):
                batch = self._to_device(next(batches))
                tokens += count_tokens(batch)
                sync = micro == s.grad_accum - 1
                with self._no_sync(sync), self._autocast():
                    loss, micro_parts = self._loss_and_parts(batch)
                scaled = loss / s.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                loss_sum += loss.detach().float()
                for name, value in micro_parts.items():
                    parts[name] = parts.get(name, 0.0) + value / s.grad_accum
            if self.working is not None:
                self.working.gradients_to_master()
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = self.shards.clip_grad_norm(s.clip_norm or math.inf)
        except torch.OutOfMemoryError:
            raise self._out_of_memory() from None
        except RuntimeError as error:
            if "out of memory" in str(error) or "can't allocate memory" in str(error):
                raise self._out_of_memory() from None
            raise
        total_loss, total_tokens, *part_sums = self.dist.sum([float(loss_sum) / s.grad_accum, tokens, *parts.values()])
        loss_value = total_loss / self.dist.world_size
        self.step_parts = {name: value / self.dist.world_size for name, value in zip(parts, part_sums)}
        if not (math.isfinite(loss_value) and (math.isfinite(grad_norm) or self.scaler is not None)):
            self._non_finite(loss_value, grad_norm)
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
            if self.working is not None:
                self.working.refresh()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, int(total_tokens)

    def _loss(self, batch: Batch) -> torch.Tensor:
        return self._loss_and_parts(batch)[0]

    def _loss_and_parts(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss hook's loss and the named parts it reports (none for a hook that returns a tensor)."""
        loss, parts = loss_and_parts(self.loss_fn(self.forward_model, batch))
        if loss is None:
            raise ConfigError("the loss hook returned None: the batches hold no labels; "
                              "give labelled batches or a loss_fn")
        return loss, parts

    def _no_sync(self, sync: bool):
        """Skip DDP's gradient all-reduce on all but the last accumulation micro-step."""
        if sync or not hasattr(self.wrapped, "no_sync"):
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def _non_finite(self, loss: float, grad_norm: float) -> None:
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        step = self.step + 1
        if self.settings.skip_nonfinite and self.skipped < self.settings.max_skips:
            self.skipped += 1  # the step's batches are consumed, its update is dropped
            self.log.append({"step": step, "skipped_nonfinite": self.skipped, "reason": what})
            return
        last = self.last_checkpoint or self._existing_last()
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        advice = ("more than max_skips steps were skipped" if self.settings.skip_nonfinite
                  else "lower --lr, raise warmup, use fp32, or pass --skip-nonfinite to skip such steps")
        raise TrainingError(f"training stopped at step {step}: {what}; {where} ({advice})")

    def _existing_last(self) -> Path | None:
        if self.out_dir is None:
            return None
        path = self.checkpoint_path("last")
        return path if path.is_dir() else None

    def _out_of_memory(self) -> TrainingError:
        last = self.last_checkpoint or self._existing_last()
        where = f"the last checkpoint {last} is intact" if last else "no checkpoint was written yet"
        return TrainingError(f"out of memory at step {self.step + 1} with {self.micro_batch} sequences per "
                             f"forward pass; raise grad_accum or lower batch_size / seq_len ({where})")

    def request_stop(self, reason: str) -> None:
        """End training after the current step (a callback's way to stop early): the step is logged,
        evaluated and saved as the last one, and the summary records `reason` as `stopped_early`."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ---- logging, evaluation, checkpoints ------------------------------------------------------
    def _after_step(self, loss: float, grad_norm: float, bar) -> None:
        s = self.settings
        self.window["loss"] += loss
        self.window["steps"] += 1
        last = self.step == s.max_steps
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self._tokens_per_second():,.0f}")
        if (s.log_every and self.step % s.log_every == 0) or last:
            record = {"step": self.step, "loss": loss, "loss_avg": self.window["loss"] / self.window["steps"],
                      "lr": learning_rate(self.step - 1, s), "grad_norm": grad_norm, "tokens": self.tokens,
                      "skipped": self.skipped, "elapsed_s": round(self._elapsed(), 3),
                      "tok_per_s": round(self._tokens_per_second(), 1), **self.step_parts}
            self.window = {"loss": 0.0, "steps": 0}
            self.log.append(record)
            for callback in self.callbacks:
                callback.on_log(self, record)
        last = last or self.stop_reason is not None  # a stop asked for while logging ends with an evaluation
        if self.eval_batches is not None and ((s.eval_every and self.step % s.eval_every == 0) or last):
            self.last_eval = self.evaluate()
            metrics = {"step": self.step, **self.last_eval}
            self.log.append(metrics)
            for callback in self.callbacks:
                callback.on_evaluate(self, metrics)
        last = last or self.stop_reason is not None
        if self.out_dir is not None and ((s.save_every and self.step % s.save_every == 0) or last):
            self.save_checkpoint("last")

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.segment_start

    def _tokens_per_second(self) -> float:
        return self.tokens / max(self._elapsed(), 1e-9)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run the evaluation hook (default: token-weighted mean loss and perplexity over at most
        `eval_batches` batches) in eval mode. Training randomness is untouched: the RNG states
        are restored afterwards, so evaluating never changes what training computes."""
        saved = rng_state()
        self.wrapped.eval()
        try:
            batches = self._limited(self.eval_batches())
            with self._autocast():
                if self.eval_fn is not None:
                    metrics = dict(self.eval_fn(self.forward_model, batches, self))
                else:
                    metrics = self._eval_loss(batches)
        finally:
            self.wrapped.train()
            set_rng_state(saved)
        return metrics

    def _limited(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for index, batch in enumerate(batches):
            if self.settings.eval_batches and index >= self.settings.eval_batches:
                return
            yield self._to_device(batch)

    def _eval_loss(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Label-weighted means of the loss and of the loss hook's parts (`eval_<part>`); the perplexity when
        the loss has no parts."""
        totals: dict[str, float] = {}
        weight = 0
        for batch in batches:
            loss, parts = self._loss_and_parts(batch)
            labels = batch.get("labels")
            count = int((labels != IGNORE_INDEX).sum()) if labels is not None else 1
            for name, value in {"loss": float(loss), **parts}.items():
                totals[name] = totals.get(name, 0.0) + value * count
            weight += count
        if weight == 0:
            raise ConfigError("the evaluation data yields no batches; give more evaluation data")
        means = {f"eval_{name}": total / weight for name, total in totals.items()}
        if len(means) > 1:  # a loss made of parts (ELECTRA's) is no log-likelihood: no perplexity
            return means
        return {"eval_loss": means["eval_loss"], "eval_ppl": math.exp(min(means["eval_loss"], 700.0))}

    def trainer_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Everything besides the weights that a resume needs (JSON part, tensor part)."""
        optimizer_meta, tensors = split_optimizer_state(self.shards.optimizer_state(self.optimizer))
        rngs = self.dist.gather(rng_state())  # one entry per rank: each has its own dropout stream
        state = {
            "step": self.step, "tokens": self.tokens, "skipped": self.skipped,
            "elapsed_s": self._elapsed(), "energy_before": self.energy_before,
            "segment_s": time.perf_counter() - self.segment_start,
            "window": self.window, "last_eval": self.last_eval, "world_size": self.dist.world_size,
            "settings": self.settings.to_dict(),
            "data": self.source.state_dict() if hasattr(self.source, "state_dict") else None,
            "callbacks": [c.state_dict() for c in self.callbacks],
            "optimizer": optimizer_meta,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs,
        }
        return state, tensors

    def save_checkpoint(self, name: str, metrics: dict[str, float] | None = None) -> Path:
        """Write checkpoints/NAME (model + trainer state) atomically; every rank must call it."""
        path = self.checkpoint_path(name)
        state, tensors = self.trainer_state()
        model = self.shards.full_model()
        if self.dist.is_main:
            card = checkpoint_card(self.card, self.step, self.tokens, metrics or self.last_eval)
            auxiliary = model.auxiliary_state_dict() if hasattr(model, "auxiliary_state_dict") else None
            write_training_checkpoint(path, saved_model(model), card, state, tensors, auxiliary)
        self.dist.barrier()
        if name == "last":
            self.last_checkpoint, self.last_saved_step = path, self.step
        return path

    def resume(self) -> None:
        """Load checkpoints/last: weights, optimizer, sampler, callbacks, counters and RNG states."""
        path = self.checkpoint_path("last")
        if not (path / "trainer_state.json").is_file():
            raise CheckpointError(f"nothing to resume: {path} holds no training checkpoint; "
                                  "start the run without --resume")
        state, tensors = read_training_state(path)
        if state["world_size"] != self.dist.world_size:
            raise CheckpointError(f"{path} was written by {state['world_size']} process(es) but this run has "
                                  f"{self.dist.world_size}; resume with the same number of processes")
        weights = read_safetensors(path / WEIGHTS_FILE)
        self.shards.load_model(weights, lambda module, st: load_weights(saved_model(module), st, str(path / WEIGHTS_FILE)))
        if hasattr(self.model, "load_auxiliary_state_dict"):
            self.model.load_auxiliary_state_dict(read_auxiliary_weights(path))
        self.shards.load_optimizer(self.optimizer, join_optimizer_state(state["optimizer"], tensors))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state.get("data") is not None and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["data"])
        for callback, callback_state in zip(self.callbacks, state.get("callbacks", [])):
            callback.load_state_dict(callback_state)
        self.step, self.tokens, self.skipped = state["step"], state["tokens"], state["skipped"]
        self.elapsed_before, self.energy_before = state["elapsed_s"], state["energy_before"]
        self.window, self.last_eval = state["window"], state["last_eval"]
        self.last_checkpoint, self.last_saved_step = path, self.step
        self.log.truncate_after(self.step)
        if self.dist.is_main:
            print(f"resuming from step {self.step} ({path})", file=sys.stderr, flush=True)
        set_rng_state(state["rng"][self.dist.rank])

    # ---- the end -----------------------------------------------------------------------------
    def _progress_bar(self):
        if not (self.progress and self.dist.is_main and sys.stderr.isatty()):
            return None  # no bar in redirected logs
        from tqdm.auto import tqdm

        return tqdm(total=self.settings.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _finish(self, wall: float, segment: float) -> TrainResult:
        reading = self.energy.stop()
        kwh, kg = self.dist.sum([reading.kwh, reading.kg_co2])
        # Segments interrupted before this one were not measured to their end: they are counted
        # at this segment's average power (their wall time is known from the checkpoint).
        if self.elapsed_before > 0 and segment > 0:
            scale = self.elapsed_before / segment
            kwh, kg = kwh * (1 + scale), kg * (1 + scale)
        for callback in self.callbacks:
            self.last_eval.update(callback.final_metrics(self))
        result = TrainResult(
            steps=self.step, tokens=self.tokens, wall_s=wall, tokens_per_s=self.tokens / max(wall, 1e-9),
            flops_per_s=6.0 * self.n_params * self.tokens / max(wall, 1e-9), parameters=self.n_params,
            world_size=self.dist.world_size, energy_kwh=kwh, co2_kg=kg, energy_source=reading.source,
            country=reading.country, skipped_nonfinite=self.skipped, metrics=dict(self.last_eval),
            stopped_early=self.stop_reason, energy_note=self.energy.problem or None, hardware=_hardware(self.dist))
        if self.out_dir is not None:
            self._write_final(result)
        for callback in self.callbacks:
            callback.on_train_end(self, result)
        return result

    def _write_final(self, result: TrainResult) -> None:
        model = self.shards.full_model()
        if not self.dist.is_main:
            self.dist.barrier()
            return
        run = self.card
        for callback in self.callbacks:
            run = dataclasses.replace(run, **callback.card_facts(self))
        saved_model(model).save(self.out_dir / "final", card=training_card(run, result))
        write_text(self.out_dir / "summary.json", json.dumps(result.summary(), indent=2) + "\n")
        self.dist.barrier()


def saved_model(model: nn.Module) -> nn.Module:
    """The model a checkpoint holds: `model` itself, or a training wrapper's `saved_model`."""
    return getattr(model, "saved_model", model)


def _hardware(dist: Distributed) -> str:
    if dist.device.type == "cuda":
        return f"{dist.world_size} x {torch.cuda.get_device_name(dist.device)}"
    return f"{dist.world_size} process(es) x {torch.get_num_threads()} CPU threads"
