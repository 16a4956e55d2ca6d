"""Pretraining inputs: objectives per family, a model fitted to the corpus tokenizer, and the
prepared shards as a resumable, rank-sharded batch source for the `Trainer`."""

from __future__ import annotations

from typing import Iterator

from ..config import ModelConfig
from ..data import OBJECTIVES, ResumableSampler, pretraining_batches, pretraining_windows
from ..errors import ConfigError, DataError
from ..tokenizer import Tokenizer

# views of the one registry, data.OBJECTIVES
OBJECTIVE_FAMILY = {name: objective.family for name, objective in OBJECTIVES.items()}
OBJECTIVE_NAMES = {name: objective.title for name, objective in OBJECTIVES.items()}


def default_objective(family: str, tokenizer: Tokenizer) -> str:
    """clm for decoders, mlm for encoders; encoder-decoders get span corruption when the tokenizer has
    T5 sentinels, else BART text infilling."""
    if family == "decoder":
        return "clm"
    if family == "encoder":
        return "mlm"
    return "span" if tokenizer.sentinel_ids else "denoise"


def build_objective(name: str, family: str, tokenizer: Tokenizer, options: dict | None = None):
    """The data-layer objective `name` for a model of `family`; `options` go to its constructor
    (e.g. {"probability": 0.3} for masked LM)."""
    if name not in OBJECTIVE_FAMILY:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_FAMILY)}")
    if OBJECTIVE_FAMILY[name] != family:
        fitting = " or ".join(k for k, v in OBJECTIVE_FAMILY.items() if v == family)
        raise ConfigError(f"objective {name} trains {_a(OBJECTIVE_FAMILY[name])} model, but this model is "
                          f"{_a(family)}; use --objective {fitting}")
    return OBJECTIVES[name](tokenizer, **(options or {}))


def _a(noun: str) -> str:
    """`noun` with its indefinite article: "an encoder", "a decoder"."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def pretraining_model(name: str, config: ModelConfig, generator: dict | None = None):
    """The module objective `name` trains, randomly initialised (the objective decides: the model of `config`
    itself, or for `rtd` generator + discriminator, `generator` holding its `scale` and `weight`)."""
    return OBJECTIVES[name].pretraining_model(config, generator)


def objective_loss(name: str):
    """The Trainer's loss hook for objective `name` (None: the model's own loss on the batch)."""
    return OBJECTIVES[name].loss


def fit_config_to_tokenizer(config: ModelConfig, tokenizer: Tokenizer, vocab_from_data: bool) -> ModelConfig:
    """The model's special-token ids from the tokenizer; its vocabulary must hold every token id
    (`vocab_from_data` sets vocab_size to the tokenizer's size instead)."""
    size = tokenizer.vocab_size
    if vocab_from_data:
        config = config.replace(vocab_size=size)
    elif config.vocab_size < size:
        raise DataError(f"the data's tokenizer has {size:,} tokens but the model's vocab_size is "
                        f"{config.vocab_size:,}; pass --vocab-from-data, or a config with vocab_size >= {size}")
    ids = {"pad_token_id": tokenizer.pad_id, "bos_token_id": tokenizer.bos_id or tokenizer.cls_id,
           "eos_token_id": tokenizer.eos_id or tokenizer.sep_id, "mask_token_id": tokenizer.mask_id}
    if config.is_encoder_decoder:  # T5 starts decoding from pad, BART from eos
        start = tokenizer.pad_id if tokenizer.sentinel_ids else (tokenizer.eos_id or tokenizer.bos_id)
        ids["decoder_start_token_id"] = start if start is not None else tokenizer.pad_id
    return config.replace(**ids)


class ShardBatches:
    """Batches of one objective over a prepared corpus split, for one rank. Iterating gives the rest
    of the current epoch; `state_dict()` is the sampler's, so a checkpoint resumes mid-epoch."""

    def __init__(self, shards, objective, micro_batch: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, split: str = "train", shuffle: bool = True):
        self.shards, self.objective, self.seq_len, self.split = shards, objective, seq_len, split
        count = len(pretraining_windows(shards, objective.window_length(seq_len), split))
        if split != "train":  # evaluation may use a smaller last batch size rather than fail on a small split
            micro_batch = min(micro_batch, count)
        try:
            self.sampler = ResumableSampler(count, micro_batch, seed=seed, rank=rank, world_size=world_size,
                                            shuffle=shuffle)
        except DataError as error:
            raise DataError(f"the {split} split of {shards.path} is too small: {error}") from None

    def __iter__(self) -> Iterator[dict]:
        return pretraining_batches(self.shards, self.objective, self.sampler.batch_size, self.seq_len,
                                   self.sampler, split=self.split)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class ShardSources:
    """The Trainer's batch factories for one objective over prepared shards: `train(micro, rank, world)`
    and `valid(batch_size)` (a fresh, unshuffled pass over the validation split)."""

    def __init__(self, shards, objective, seq_len: int, seed: int = 0):
        self.shards, self.objective, self.seq_len, self.seed = shards, objective, seq_len, seed

    def train(self, micro_batch: int, rank: int = 0, world_size: int = 1) -> ShardBatches:
        return ShardBatches(self.shards, self.objective, micro_batch, self.seq_len, rank, world_size, seed=self.seed)

    def valid(self, batch_size: int) -> ShardBatches:
        return ShardBatches(self.shards, self.objective, batch_size, self.seq_len, split="valid", shuffle=False)

    @property
    def has_valid(self) -> bool:
        """Whether the validation split holds at least one sequence."""
        return len(self.shards.valid) >= self.objective.window_length(self.seq_len)
