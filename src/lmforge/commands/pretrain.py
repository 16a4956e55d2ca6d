"""`lmforge pretrain`: train a model from scratch on prepared token shards.

    lmforge pretrain --preset tiny-gpt2 --data shards/ --out runs/gpt --max-steps 2000
    lmforge pretrain --out runs/gpt --resume                       # continue exactly where it stopped
    torchrun --nproc-per-node 4 -m lmforge pretrain ... [--fsdp]   # data parallel (DDP) or fully sharded

The run folder holds run.json (the resolved run: architecture, objective, data, settings),
metrics.jsonl, checkpoints/{last,best}, summary.json and final/ (a normal lmforge checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

RUN_FILE = "run.json"
SETTING_HELP = {
    "max_steps": "optimizer steps", "batch_size": "sequences per optimizer step, over all processes",
    "grad_accum": "micro-steps per optimizer step", "seq_len": "tokens per sequence (default min(256, max_positions))",
    "lr": "peak learning rate", "warmup_steps": "linear warmup steps", "schedule": "cosine | linear | constant",
    "precision": "fp32 | bf16 (CPU/CUDA autocast) | fp16 (CUDA, with a gradient scaler)",
    "compile": "torch.compile the model", "skip_nonfinite": "skip steps whose loss or gradient is not finite",
    "eval_every": "evaluate every N steps (0: at the end)", "save_every": "checkpoint every N steps (0: at the end)",
    "best_metric": "metric that selects checkpoints/best",
}


def register(subparsers) -> None:
    from ..train.carbon import DEFAULT_COUNTRY

    parser = subparsers.add_parser("pretrain", help="pretrain a model on prepared token shards",
                                   description=__doc__.split("\n\n")[0] + " Settings come from --run-config "
                                   "(YAML/JSON), then from the flags below.")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--preset", help="a named architecture (see lmforge.presets.names())")
    model.add_argument("--config", metavar="FILE", help="an architecture as .json or .yaml")
    parser.add_argument("--data", metavar="DIR", help="prepared token shards (from `lmforge prepare`)")
    parser.add_argument("--objective", choices=["clm", "mlm", "span", "denoise"],
                        help="default: clm (decoder), mlm (encoder), span or denoise (encoder-decoder, by tokenizer)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--run-config", metavar="FILE", help="training settings as YAML or JSON")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument("--vocab-from-data", action="store_true",
                        help="set the model's vocab_size to the data tokenizer's size")
    parser.add_argument("--country", default=None,
                        help=f"ISO 3166 alpha-3 country of the electricity grid for CO2 (default {DEFAULT_COUNTRY})")
    parser.add_argument("--no-codecarbon", action="store_true", help="estimate energy from wall time only")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP under torchrun")
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: this rank's GPU, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(parser)
    parser.set_defaults(run=run)


def add_setting_flags(parser) -> None:
    """One flag per `TrainSettings` field (--max-steps, --lr, ...), each overriding --run-config."""
    from ..train.settings import TrainSettings

    settings = parser.add_argument_group("training settings (override --run-config)")
    for field in dataclasses.fields(TrainSettings):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            settings.add_argument(flag, action="store_true", default=None, help=SETTING_HELP.get(field.name))
        else:
            kind = float if field.name == "clip_norm" else type(field.default)
            settings.add_argument(flag, type=kind, default=None, metavar=field.name.upper(),
                                  help=SETTING_HELP.get(field.name))


def run(args) -> int:
    from ..train.distributed import Distributed

    dist = Distributed.from_env(args.device)
    try:
        return _pretrain(args, dist)
    finally:
        dist.close()


def _pretrain(args, dist) -> int:
    from ..data import TokenShards
    from ..errors import ConfigError
    from ..models.build import build_model
    from ..train import EnergyMeter, Trainer, seed_everything
    from ..train.pretraining import OBJECTIVE_NAMES, ShardBatches, build_objective, objective_loss
    from ..config import ModelConfig
    from ..train.settings import TrainSettings

    out = Path(args.out)
    previous = _previous_run(out, args)
    run_spec = previous if args.resume else _resolve(args, dist)
    if args.resume:
        _check_unchanged(args, previous, dist)
    config = ModelConfig.from_dict(run_spec["model"])
    settings = TrainSettings.from_dict(run_spec["train"])
    shards = TokenShards(run_spec["data"])
    if shards.tokenizer_hash != run_spec["tokenizer_hash"]:
        raise ConfigError(f"{run_spec['data']} was prepared again with another tokenizer since this run started; "
                          "resume needs the same data")
    tokenizer = shards.tokenizer
    seed_everything(settings.seed)
    model = build_model(config)
    model.attach_tokenizer(tokenizer)
    objective = build_objective(run_spec["objective"], config.family, tokenizer)
    window = objective.window_length(settings.seq_len)
    card = {"objective": OBJECTIVE_NAMES[run_spec["objective"]], "training_type": "pre-training",
            "data": f"{Path(run_spec['data']).name} ({len(shards.train):,} train tokens)",
            "description": f"A {config.family} Transformer pretrained by `lmforge pretrain` "
                           f"({OBJECTIVE_NAMES[run_spec['objective']]})."}

    def train_batches(micro: int, rank: int, world: int):
        return ShardBatches(shards, objective, micro, settings.seq_len, rank, world, seed=settings.seed)

    def eval_batches():
        return ShardBatches(shards, objective, trainer.micro_batch, settings.seq_len, split="valid", shuffle=False)

    has_valid = len(shards.valid) >= window
    trainer = Trainer(model, settings, train_batches, eval_batches if has_valid else None, out_dir=out, card=card,
                      dist=dist, fsdp=run_spec["fsdp"], loss_fn=objective_loss(run_spec["objective"]),
                      energy=EnergyMeter(run_spec["country"], use_codecarbon=not args.no_codecarbon),
                      progress=not args.quiet)
    if dist.is_main and not args.resume:
        _start_folder(out, run_spec, args.overwrite)
    dist.barrier()
    summary = trainer.fit(resume=args.resume)
    if dist.is_main:
        print(_summary_line(summary, out))
    return 0


def _previous_run(out: Path, args) -> dict | None:
    """The run.json already in `out` (None for a new or empty folder); refuses what must not be touched."""
    from ..errors import ConfigError

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run")
    spec_file = out / RUN_FILE
    if not spec_file.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"{out} is not empty and holds no lmforge run ({RUN_FILE}); choose a new or empty folder")
        if args.resume:
            raise ConfigError(f"nothing to resume: {out} holds no run; start it without --resume")
        return None
    try:
        previous = json.loads(spec_file.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{spec_file} is damaged; start again with --overwrite") from None
    if not (args.resume or args.overwrite):
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                          "or choose another --out")
    return previous


def _resolve(args, dist) -> dict:
    """The run from the flags: architecture fitted to the data's tokenizer, objective, settings."""
    from .. import presets
    from ..config import ModelConfig
    from ..data import TokenShards
    from ..errors import ConfigError
    from ..train.carbon import DEFAULT_COUNTRY
    from ..train.pretraining import build_objective, default_objective, fit_config_to_tokenizer

    if not (args.preset or args.config):
        raise ConfigError("give the architecture with --preset NAME or --config FILE.json|yaml")
    if not args.data:
        raise ConfigError("give the prepared token shards with --data DIR (create them with `lmforge prepare`)")
    config = presets.get(args.preset) if args.preset else ModelConfig.from_file(args.config)
    shards = TokenShards(args.data)
    tokenizer = shards.tokenizer
    config = fit_config_to_tokenizer(config, tokenizer, args.vocab_from_data)
    objective = args.objective or default_objective(config.family, tokenizer)
    build_objective(objective, config.family, tokenizer)  # validates the pairing
    settings = _settings(args, config)
    settings.check_world(dist.world_size)
    return {"model": config.to_dict(), "objective": objective, "data": str(Path(args.data).resolve()),
            "tokenizer_hash": shards.tokenizer_hash, "train": settings.to_dict(), "fsdp": bool(args.fsdp),
            "country": (args.country or DEFAULT_COUNTRY).upper()}


def _setting_overrides(args) -> dict:
    from ..train.settings import TrainSettings

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)
            if getattr(args, f.name, None) is not None}


def _settings(args, config):
    from ..errors import ConfigError
    from ..train.settings import TrainSettings, read_run_file

    values = read_run_file(args.run_config) if args.run_config else {}
    values = {**values, **_setting_overrides(args)}
    values.setdefault("seq_len", min(TrainSettings.seq_len, config.max_positions))
    settings = TrainSettings.from_dict(values)
    if config.positions_bounded and settings.seq_len > config.max_positions:
        raise ConfigError(f"seq_len={settings.seq_len} exceeds the model's max_positions={config.max_positions}; "
                          f"pass --seq-len {config.max_positions} or less")
    return settings


def _check_unchanged(args, previous: dict, dist) -> None:
    """--resume continues the recorded run: flags given with it must agree with run.json."""
    from ..errors import ConfigError

    changed = [f"{k}={v!r} (run has {previous['train'][k]!r})" for k, v in _setting_overrides(args).items()
               if previous["train"].get(k) != v]
    if args.data and str(Path(args.data).resolve()) != previous["data"]:
        changed.append(f"--data {args.data} (run has {previous['data']})")
    if args.objective and args.objective != previous["objective"]:
        changed.append(f"--objective {args.objective} (run has {previous['objective']})")
    if args.fsdp != previous["fsdp"]:
        changed.append(f"--fsdp {args.fsdp} (run has {previous['fsdp']})")
    if args.preset or args.config or args.run_config:
        changed.append("--preset/--config/--run-config (the architecture and settings are in run.json)")
    if changed:
        raise ConfigError(f"--resume continues the run recorded in {Path(args.out) / RUN_FILE}, but these differ: "
                          f"{'; '.join(changed)}; drop them, or start a new run with --overwrite or another --out")


def _start_folder(out: Path, run_spec: dict, overwrite: bool) -> None:
    from ..checkpoint.atomic import write_text

    if overwrite and (out / RUN_FILE).is_file():
        shutil.rmtree(out)
    write_text(out / RUN_FILE, json.dumps(run_spec, indent=2) + "\n")


def _summary_line(s: dict, out: Path) -> str:
    evals = "".join(f", {k} {v:.4f}" for k, v in s.items() if k.startswith("eval_"))
    return (f"trained {s['steps']:,} steps, {s['tokens']:,} tokens in {s['wall_s']:.1f} s "
            f"({s['tokens_per_s']:,.0f} tok/s, {s['flops_per_s']:.3g} FLOP/s{evals}); energy {s['energy_kwh']:.3g} kWh, "
            f"{s['co2_kg']:.3g} kg CO2eq ({s['energy_source']}, {s['country']}); final checkpoint: {out / 'final'}")
