"""`pretrain(...)`: one pretraining run on prepared token shards, in a run folder that can be resumed.

    summary = pretrain("runs/gpt", PretrainRequest(preset="tiny-gpt2", data="shards/", settings={"max_steps": 2000}))
    summary = pretrain("runs/gpt", resume=True)          # continue exactly where it stopped

The run folder holds run.json (the resolved run: architecture, objective, data, settings),
metrics.jsonl, checkpoints/{last,best}, summary.json and final/ (a normal lmforge checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import presets
from ..config import ModelConfig
from ..data import OBJECTIVES, TokenShards
from ..errors import ConfigError
from ..models.electra import DEFAULT_DISCRIMINATOR_WEIGHT, DEFAULT_GENERATOR_SCALE
from ..seeding import seed_everything
from .budget import fit_to_budget
from .callbacks import TimeBudget
from .carbon import EnergyMeter, grid_country
from .distributed import Distributed
from .pretraining import OBJECTIVE_NAMES, ShardSources, build_objective, default_objective, fit_config_to_tokenizer, \
    objective_loss, pretraining_model
from .recipe import default_recipe, get_recipe, objective_options
from .result import RunCard, TrainResult
from .run_folder import RunFolder
from .settings import TrainSettings, read_run_file
from .trainer import Trainer, saved_model

RUN_FILE = "run.json"


def settings_for(config: ModelConfig, run_config: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> TrainSettings:
    """Training settings from a YAML/JSON run file, then `overrides` (flags); seq_len defaults to
    min(256, the model's max_positions) and may not exceed a bounded position table."""
    values = read_run_file(run_config) if run_config else {}
    values = {**values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    values.setdefault("seq_len", min(TrainSettings.seq_len, config.max_positions))
    settings = TrainSettings.from_dict(values)
    if config.positions_bounded and settings.seq_len > config.max_positions:
        raise ConfigError(f"seq_len={settings.seq_len} exceeds the model's max_positions={config.max_positions}; "
                          f"pass --seq-len {config.max_positions} or less")
    return settings


@dataclass
class PretrainRequest:
    """What a new run asks for; `resolve` turns it into the recorded run (run.json)."""

    preset: str | None = None  # a named architecture
    config: str | Path | ModelConfig | None = None  # or an architecture file / ModelConfig
    data: str | Path | None = None  # prepared token shards
    objective: str | None = None  # default: by family and tokenizer
    run_config: str | Path | None = None  # YAML/JSON training settings
    settings: dict[str, Any] = field(default_factory=dict)  # TrainSettings fields overriding run_config
    vocab_from_data: bool = False
    fsdp: bool = False
    country: str | None = None
    recipe: str | None = None  # small-budget | standard (default: standard, train/recipe.py)
    time_budget: float | None = None  # seconds: max_steps sized by timed trial steps (train/budget.py)
    mask_probability: float | None = None  # masked LM and RTD (default: the recipe's)
    generator_scale: float | None = None  # RTD: generator width / discriminator width (default 0.25)
    discriminator_weight: float | None = None  # RTD: lambda, the discriminator loss's weight (default 50)

    def resolve(self, world_size: int = 1) -> dict[str, Any]:
        """The run: architecture fitted to the data's tokenizer, objective, settings."""
        if self.preset is None and self.config is None:
            raise ConfigError("give the architecture with --preset NAME or --config FILE.json|yaml")
        if not self.data:
            raise ConfigError("give the prepared token shards with --data DIR (create them with `lmforge prepare`)")
        config = self._architecture()
        shards = TokenShards(self.data)
        tokenizer = shards.tokenizer
        config = fit_config_to_tokenizer(config, tokenizer, self.vocab_from_data)
        objective = self.objective or default_objective(config.family, tokenizer)
        recipe = get_recipe(self.recipe or default_recipe(config))
        options = objective_options(objective, recipe, self.mask_probability)
        build_objective(objective, config.family, tokenizer, options)  # validates the pairing
        generator = self._generator_options(objective)
        if generator is not None:
            if self.fsdp:
                raise ConfigError("--objective rtd trains with data parallelism only; drop --fsdp")
            pretraining_model(objective, config, generator)  # validates the generator's size
        config, values = recipe.apply(config, {"max_steps": TrainSettings.max_steps,
                                               **(read_run_file(self.run_config) if self.run_config else {}),
                                               **{k: v for k, v in self.settings.items() if v is not None}})
        settings = settings_for(config, None, values)
        settings.check_world(world_size)
        training_budget = None
        if self.time_budget is not None:
            if self.settings.get("max_steps") is not None:
                raise ConfigError("give either --max-steps or --time-budget, not both")
            sources = ShardSources(shards, build_objective(objective, config.family, tokenizer, options),
                                   settings.seq_len, settings.seed + 1)
            settings, training_budget = fit_to_budget(self.time_budget, pretraining_model(objective, config, generator),
                                                      settings, sources, objective_loss(objective), recipe,
                                                      self.settings, world_size)
        return {"model": config.to_dict(), "objective": objective, "objective_options": options,
                **({"generator": generator} if generator is not None else {}), "recipe": recipe.name,
                "time_budget_s": self.time_budget, "training_budget_s": training_budget,
                "data": str(Path(self.data).resolve()), "tokenizer_hash": shards.tokenizer_hash,
                "train": settings.to_dict(), "fsdp": bool(self.fsdp), "country": grid_country(self.country)}

    def _generator_options(self, objective: str) -> dict | None:
        """RTD's generator options as run.json records them (None for the other objectives, which refuse them)."""
        given = {"--generator-scale": self.generator_scale, "--discriminator-weight": self.discriminator_weight}
        if not OBJECTIVES[objective].has_generator:
            for flag, value in given.items():
                if value is not None:
                    raise ConfigError(f"{flag} applies to --objective rtd, not {objective}; drop it")
            return None
        return {"scale": self.generator_scale if self.generator_scale is not None else DEFAULT_GENERATOR_SCALE,
                "weight": self.discriminator_weight if self.discriminator_weight is not None
                else DEFAULT_DISCRIMINATOR_WEIGHT}

    def _architecture(self) -> ModelConfig:
        if self.preset is not None:
            return presets.get(self.preset)
        return self.config if isinstance(self.config, ModelConfig) else ModelConfig.from_file(self.config)

    def check_resume(self, previous: dict, spec_file: Path) -> None:
        """--resume continues the recorded run: what is asked with it must agree with run.json."""
        changed = [f"{k}={v!r} (run has {previous['train'][k]!r})" for k, v in self.settings.items()
                   if v is not None and previous["train"].get(k) != v]
        if self.data and str(Path(self.data).resolve()) != previous["data"]:
            changed.append(f"--data {self.data} (run has {previous['data']})")
        if self.objective and self.objective != previous["objective"]:
            changed.append(f"--objective {self.objective} (run has {previous['objective']})")
        if self.fsdp != previous["fsdp"]:
            changed.append(f"--fsdp {self.fsdp} (run has {previous['fsdp']})")
        if self.preset or self.config or self.run_config:
            changed.append("--preset/--config/--run-config (the architecture and settings are in run.json)")
        asked = {"--recipe": (self.recipe, previous.get("recipe")),
                 "--time-budget": (self.time_budget, previous.get("time_budget_s")),
                 "--mask-probability": (self.mask_probability, previous.get("objective_options", {}).get("probability")),
                 "--generator-scale": (self.generator_scale, previous.get("generator", {}).get("scale")),
                 "--discriminator-weight": (self.discriminator_weight, previous.get("generator", {}).get("weight"))}
        changed += [f"{flag} {mine} (run has {theirs})" for flag, (mine, theirs) in asked.items()
                    if mine is not None and mine != theirs]
        if changed:
            raise ConfigError(f"--resume continues the run recorded in {spec_file}, but these differ: "
                              f"{'; '.join(changed)}; drop them, or start a new run with --overwrite or another --out")


def pretrain(out: str | Path, request: PretrainRequest | None = None, *, resume: bool = False,
             overwrite: bool = False, dist: Distributed | None = None, use_codecarbon: bool = True,
             progress: bool = True, say=print) -> TrainResult:
    """Run (or with `resume`, continue) the pretraining run in folder `out`; returns the `TrainResult`.

    A new run needs `request` (architecture, data, settings); `out` must be new, empty, or (with
    `overwrite`) an earlier pretraining run. A run killed before its first checkpoint is started again
    from step 0 by `resume`. A run refused before its first checkpoint (bad data) leaves nothing behind."""
    dist = dist or Distributed()
    request = request or PretrainRequest()
    folder = RunFolder(out, "pretrain", RUN_FILE)
    previous = folder.open(resume, overwrite)
    if resume:
        request.check_resume(previous, folder.path / RUN_FILE)
        if dist.is_main:
            folder.recover()
        dist.barrier()
    run_spec = previous if resume else request.resolve(dist.world_size)
    continuing = resume and folder.has_checkpoint()
    trainer = _trainer(run_spec, folder.path, dist, use_codecarbon, progress)
    if dist.is_main:
        if not resume:
            folder.start(run_spec)
        elif not continuing:
            say(f"{folder.path} has no checkpoint yet; starting the recorded run from step 0")
            folder.restart_without_checkpoint()
    dist.barrier()
    with folder.refusals_leave_nothing(new=not resume and dist.is_main):
        return trainer.fit(resume=continuing)


def _trainer(run_spec: dict, out: Path, dist: Distributed, use_codecarbon: bool, progress: bool) -> Trainer:
    """The model, objective and batch sources of a resolved run, wired into a Trainer."""
    config = ModelConfig.from_dict(run_spec["model"])
    settings = TrainSettings.from_dict(run_spec["train"])
    shards = TokenShards(run_spec["data"])
    if shards.tokenizer_hash != run_spec["tokenizer_hash"]:
        raise ConfigError(f"{run_spec['data']} was prepared again with another tokenizer since this run started; "
                          "resume needs the same data")
    tokenizer = shards.tokenizer
    seed_everything(settings.seed)
    model = pretraining_model(run_spec["objective"], config, run_spec.get("generator"))
    saved_model(model).attach_tokenizer(tokenizer)
    name = run_spec["objective"]
    sources = ShardSources(shards, build_objective(name, config.family, tokenizer, run_spec.get("objective_options")),
                           settings.seq_len, settings.seed)
    card = RunCard("pre-training", objective=OBJECTIVE_NAMES[name],
                   data=f"{Path(run_spec['data']).name} ({len(shards.train):,} train tokens)",
                   description=f"A {config.family} Transformer pretrained by `lmforge pretrain` ({OBJECTIVE_NAMES[name]}).")
    return shard_trainer(model, sources, settings, out, card=card, dist=dist, fsdp=run_spec["fsdp"],
                         loss_fn=objective_loss(name), progress=progress,
                         callbacks=[TimeBudget(run_spec["training_budget_s"])] if run_spec.get("training_budget_s") else [],
                         energy=EnergyMeter(run_spec["country"], use_codecarbon=use_codecarbon))


def shard_trainer(model, sources: ShardSources, settings: TrainSettings, out: Path | None,
                  eval_batch_size: int | None = None, **trainer_options) -> Trainer:
    """A Trainer over prepared shards: training batches from `sources`, validation (when the split holds a
    sequence) in batches of `eval_batch_size` (default: the Trainer's micro-batch)."""
    trainer: Trainer | None = None

    def eval_batches():
        return sources.valid(eval_batch_size or trainer.micro_batch)

    trainer = Trainer(model, settings, sources.train, eval_batches if sources.has_valid else None, out_dir=out,
                      **trainer_options)
    return trainer


def describe(result: TrainResult, out: str | Path) -> str:
    """The one-line report of a finished pretraining run."""
    s = result.summary()
    evals = "".join(f", {k} {v:.4f}" for k, v in s.items() if k.startswith("eval_"))
    return (f"trained {s['steps']:,} steps, {s['tokens']:,} tokens in {s['wall_s']:.1f} s "
            f"({s['tokens_per_s']:,.0f} tok/s, {s['flops_per_s']:.3g} FLOP/s{evals}); energy {s['energy_kwh']:.3g} kWh, "
            f"{s['co2_kg']:.3g} kg CO2eq ({s['energy_source']}, {s['country']}); final checkpoint: {Path(out) / 'final'}")
