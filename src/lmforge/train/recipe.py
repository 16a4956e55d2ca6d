"""Pretraining recipes: how a model is shaped and trained when it is pretrained from scratch.

`small-budget` is what the small-compute literature measured to work in minutes rather than days, and
what the ablation in examples/pretrain_ablation.py kept here (its table is in the README):
  * pre-LayerNorm blocks with a final norm (Xiong et al. 2020: trains stably at large rates with a
    short warm-up), no biases in the attention and feed-forward linears, no dropout while pretraining
    (Geiping & Goldstein 2022, "Cramming");
  * a large peak learning rate (1e-3) reached after 6% of the steps, then linear decay that reaches
    zero exactly at the last step of the budget (Cramming's one-cycle schedule);
  * masking 30% of the tokens instead of 15% (Wettig et al. 2022);
  * rotary positions (0.8 nats lower masked-LM loss at the same step count in the ablation), batch 16
    (more steps for the same tokens), and sequence classifiers that read the mean token vector (5 to 17
    points better after masked-LM pretraining than the untrained first-token pooler).
`standard` leaves the architecture and the settings as given (BERT's recipe for published sizes).

`small-budget` is the default for small encoders (under SMALL_MODEL parameters outside the embeddings:
every tiny preset, the demo's model), `standard` for everything else, decoders and encoder-decoders
included (the ablation measured masked-LM pretraining only). The ablation table is in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ModelConfig
from ..data import OBJECTIVES
from ..errors import ConfigError

@dataclass(frozen=True)
class Recipe:
    """Changes to the architecture, the training settings and the masked-LM objective."""

    name: str
    architecture: dict = field(default_factory=dict)  # ModelConfig fields
    settings: dict = field(default_factory=dict)  # TrainSettings fields the user did not give
    mask_probability: float = 0.15  # masked LM / RTD: share of tokens chosen
    warmup_fraction: float | None = None  # warm-up as a share of max_steps (None: leave warmup_steps)

    def apply(self, config: ModelConfig, values: dict) -> tuple[ModelConfig, dict]:
        """The architecture with this recipe's changes and the settings `values` completed by its
        defaults (a value given by the user always wins)."""
        config = config.replace(**self.architecture) if self.architecture else config
        values = {**self.settings, **values}
        if self.warmup_fraction is not None and "warmup_steps" not in values and "max_steps" in values:
            values["warmup_steps"] = max(1, round(self.warmup_fraction * values["max_steps"]))
        return config.validate(), values


RECIPES = {
    "small-budget": Recipe(
        name="small-budget",
        architecture={"norm_placement": "pre", "final_norm": True, "bias": False, "dropout": 0.0,
                      "attention_dropout": 0.0, "activation_dropout": 0.0, "positions": "rotary",
                      "classifier_pool": "mean"},
        settings={"lr": 1e-3, "schedule": "linear", "min_lr_ratio": 0.0, "weight_decay": 0.01, "beta2": 0.98,
                  "batch_size": 16},
        mask_probability=0.3, warmup_fraction=0.06),
    "standard": Recipe(name="standard"),
}


SMALL_MODEL = 10_000_000  # parameters outside the embeddings; bert-base has 85M, all-MiniLM-L6-v2 10.6M


def block_parameters(config: ModelConfig) -> int:
    """About how many parameters the Transformer blocks hold (attention 4 d^2, feed-forward 2 d d_ff per layer)."""
    layers = config.n_layers + (config.decoder_layers if config.family == "encoder-decoder" else 0)
    return layers * (4 * config.d_model ** 2 + 2 * config.d_model * config.d_ff)


def default_recipe(config: ModelConfig) -> str:
    """The recipe a run gets when none is named: `small-budget` for an encoder under SMALL_MODEL block
    parameters, else `standard` (see the module docstring for why)."""
    return "small-budget" if config.family == "encoder" and block_parameters(config) < SMALL_MODEL else "standard"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def objective_options(objective: str, recipe: Recipe, mask_probability: float | None) -> dict:
    """Constructor options of the objective: the masking probability for masked LM and replaced-token
    detection (given, else the recipe's)."""
    if mask_probability is not None and not 0 < mask_probability < 1:
        raise ConfigError(f"--mask-probability must be between 0 and 1, got {mask_probability}")
    if not OBJECTIVES[objective].masks_tokens:
        if mask_probability is not None:
            masking = " or ".join(name for name, entry in OBJECTIVES.items() if entry.masks_tokens)
            raise ConfigError(f"--mask-probability applies to --objective {masking}, not {objective}; drop it")
        return {}
    return {"probability": mask_probability if mask_probability is not None else recipe.mask_probability}
