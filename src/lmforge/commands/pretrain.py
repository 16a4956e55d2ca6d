"""`lmforge pretrain`: train a model from scratch on prepared token shards.

    lmforge pretrain --preset tiny-gpt2 --data shards/ --out runs/gpt --max-steps 2000
    lmforge pretrain --out runs/gpt --resume                       # continue exactly where it stopped
    torchrun --nproc-per-node 4 -m lmforge pretrain ... [--fsdp]   # data parallel (DDP) or fully sharded

The run folder holds run.json (the resolved run: architecture, objective, data, settings),
metrics.jsonl, checkpoints/{last,best}, summary.json and final/ (a normal lmforge checkpoint).
"""

from __future__ import annotations

from ..train.distributed import Distributed
from ..train.pretrain import PretrainRequest, describe, pretrain
from ..train.pretraining import OBJECTIVE_FAMILY
from ..train.recipe import RECIPES
from .flags import add_training_run_flags, setting_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser("pretrain", help="pretrain a model on prepared token shards",
                                   description=__doc__.split("\n\n")[0] + " Settings come from --run-config "
                                   "(YAML/JSON), then from the flags below.")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--preset", help="a named architecture (see lmforge.presets.names())")
    model.add_argument("--config", metavar="FILE", help="an architecture as .json or .yaml")
    parser.add_argument("--data", metavar="DIR", help="prepared token shards (from `lmforge prepare`)")
    parser.add_argument("--objective", choices=list(OBJECTIVE_FAMILY),
                        help="default: clm (decoder), mlm (encoder), span or denoise (encoder-decoder, by tokenizer); "
                             "rtd: ELECTRA replaced-token detection (encoders)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--run-config", metavar="FILE", help="training settings as YAML or JSON")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last")
    parser.add_argument("--overwrite", action="store_true", help="replace the pretraining run already in --out")
    parser.add_argument("--vocab-from-data", action="store_true",
                        help="set the model's vocab_size to the data tokenizer's size")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP under torchrun")
    parser.add_argument("--recipe", choices=list(RECIPES),
                        help="small-budget: pre-norm, no biases, no dropout, lr 1e-3 decaying linearly to zero at the "
                             "last step, 30%% masking; standard: as configured (the default)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="train for about this long: steps are sized from timed trial steps and the schedule "
                             "ends at the budget (instead of --max-steps)")
    parser.add_argument("--mask-probability", type=float, metavar="P",
                        help="masked LM and rtd: share of tokens chosen (default: the recipe's, 0.3 small-budget, 0.15 standard)")
    parser.add_argument("--generator-scale", type=float, metavar="F",
                        help="rtd: the generator's width as a share of the discriminator's, in (0, 1] (default 0.25)")
    parser.add_argument("--discriminator-weight", type=float, metavar="W",
                        help="rtd: the weight of the discriminator's loss beside the generator's (default 50)")
    add_training_run_flags(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    request = PretrainRequest(preset=args.preset, config=args.config, data=args.data, objective=args.objective,
                              run_config=args.run_config, settings=setting_overrides(args),
                              vocab_from_data=args.vocab_from_data, fsdp=args.fsdp, country=args.country,
                              recipe=args.recipe, time_budget=args.time_budget, mask_probability=args.mask_probability,
                              generator_scale=args.generator_scale, discriminator_weight=args.discriminator_weight)
    dist = Distributed.from_env(args.device)
    try:
        summary = pretrain(args.out, request, resume=args.resume, overwrite=args.overwrite, dist=dist,
                           use_codecarbon=args.codecarbon, progress=not args.quiet,
                           say=print if dist.is_main else lambda line: None)
        if dist.is_main:
            print(describe(summary, args.out))
    finally:
        dist.close()
    return 0
