"""Training: one loop (`Trainer`) for pretraining, fine-tuning and distillation, with its settings,
optimizer, checkpoints, distributed wrapping and energy accounting."""

from .callbacks import BestCheckpoint, Callback
from .carbon import DEFAULT_COUNTRY, EnergyMeter, EnergyReading
from .distributed import Distributed
from .settings import TrainSettings, read_run_file
from ..seeding import seed_everything
from .trainer import Trainer, TrainingError, count_tokens, default_loss
from .result import RunCard, TrainResult, training_card
from .run_folder import RunFolder
from .pretrain import PretrainRequest, pretrain

__all__ = ["Trainer", "TrainSettings", "TrainingError", "Callback", "BestCheckpoint", "EnergyMeter",
           "EnergyReading", "Distributed", "DEFAULT_COUNTRY", "read_run_file", "count_tokens", "default_loss",
           "seed_everything", "TrainResult", "RunCard", "training_card", "RunFolder", "PretrainRequest", "pretrain"]
