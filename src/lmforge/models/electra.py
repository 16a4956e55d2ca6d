"""ELECTRA replaced-token detection (Clark et al. 2020): what `lmforge pretrain --objective rtd` trains.

    generator      a narrow masked LM reading the discriminator's token embedding (projected to its width)
                   and predicting through it; trained with the masked-LM loss at the masked positions only
    sampling       each masked position gets a token drawn from the generator's softmax (Gumbel-max with a
                   generator seeded by the batch, no gradient): the corrupted text
    discriminator  the encoder being pretrained: at every real token, was it replaced? A sampled token that
                   equals the original counts as original.
    loss           generator MLM loss + discriminator_weight (50) x discriminator binary cross-entropy

The embedding receives gradient from both losses. `ElectraPretraining.saved_model` is the discriminator
as an ordinary headless encoder (task `embedding`): checkpoints and final/ hold it, so it fine-tunes,
distills and exports like any other encoder. The detection head and the generator are training-only
parts (`auxiliary_state_dict`), kept in training checkpoints for exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..labels import IGNORE_INDEX
from ..nn.loss import cross_entropy
from ..nn.mlp import ACTIVATION_FUNCTIONS
from ..nn.stack import Stack
from .base import LmforgeModel, init_weights
from .build import build_model
from .heads import HeadInputs, MaskedLMHead

DEFAULT_GENERATOR_SCALE = 0.25  # ELECTRA's generators are 1/4 to 1/3 of the discriminator's width
DEFAULT_DISCRIMINATOR_WEIGHT = 50.0  # lambda in the paper
SAVED_TASK = "embedding"  # the discriminator is saved headless


def generator_config(config: ModelConfig, scale: float) -> ModelConfig:
    """The generator's architecture: the discriminator's, `scale` times as wide (same depth and head width,
    max(1, round(scale * n_heads)) heads, the feed-forward width scaled alike). `scale` must be in (0, 1]."""
    if not 0 < scale <= 1:
        problem = "would make the generator wider than its discriminator" if scale > 1 else \
            "is not a share of the discriminator's width"
        raise ConfigError(f"--generator-scale {scale:g} {problem}; give a value in (0, 1] "
                          "(ELECTRA uses 0.25 to 0.33)")
    heads = max(1, round(scale * config.n_heads))
    width = heads * config.head_dim
    return config.replace(d_model=width, n_heads=heads, n_kv_heads=None, d_head=None,
                          d_ff=max(1, round(config.d_ff * width / config.d_model))).validate()


class Generator(nn.Module):
    """A masked LM of width `config.d_model` over a token embedding of width `embedding_width`:
    projection in (when narrower), a bidirectional stack, and BERT's MLM head mapping back to the embedding
    width and predicting through the (shared) embedding matrix."""

    def __init__(self, config: ModelConfig, embedding_width: int):
        super().__init__()
        self.project = nn.Linear(embedding_width, config.d_model) if config.d_model != embedding_width else None
        self.encoder = Stack(config, config.n_layers, causal=False)
        self.head = MaskedLMHead(config.replace(d_model=embedding_width, n_heads=1, d_head=embedding_width,
                                                tie_embeddings=True, mlm_transform=True),
                                 input_width=config.d_model)
        init_weights(self, config)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                embedding: torch.Tensor) -> torch.Tensor:
        """embeds (B, T, D) token embeddings, `positions` (B, T) bool where to predict, `embedding` (V, D)
        the shared matrix -> logits (N, V) at the N chosen positions, in row-major order."""
        x = self.project(embeds) if self.project is not None else embeds  # (B, T, d)
        hidden = self.encoder(x, attention_mask)  # (B, T, d)
        return self.head(hidden[positions], HeadInputs(embedding))  # (N, V)


class DetectionHead(nn.Module):
    """ELECTRA's discriminator head: dense + activation, then one logit per token (replaced or not)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        self.out = nn.Linear(config.d_model, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T)
        return self.out(self.act(self.dense(hidden))).squeeze(-1)


@torch.no_grad()
def sample_tokens(logits: torch.Tensor, seed: int) -> torch.Tensor:
    """One token per row of `logits` (N, V), drawn from softmax(logits) by the Gumbel-max trick with a
    torch generator seeded by `seed` (so a batch always draws the same tokens); no gradient. -> (N,)"""
    generator = torch.Generator(device=logits.device).manual_seed(seed)
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_min(1e-20)
    return (logits.detach().float() - torch.log(-torch.log(uniform))).argmax(dim=-1)


def replaced_labels(original: torch.Tensor, corrupted: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """The discriminator's targets (B, T): 1 where `corrupted` differs from `original`, 0 where it is the
    same (a sampled token equal to the original is original), IGNORE_INDEX where `scored` is False."""
    labels = (corrupted != original).long()
    return labels.masked_fill(~scored, IGNORE_INDEX)


@dataclass
class ElectraOutput:
    """The combined loss and its parts for one batch (the parts as detached floats for logging)."""

    loss: torch.Tensor
    generator_loss: torch.Tensor
    discriminator_loss: torch.Tensor
    discriminator_accuracy: float
    replaced_fraction: float  # of the scored tokens
    detection_labels: torch.Tensor  # (B, T) replaced_labels of this batch
    corrupted_ids: torch.Tensor  # (B, T) the discriminator's input

    def parts(self) -> dict[str, float]:
        """What the training log records beside the loss."""
        return {"generator_loss": float(self.generator_loss.detach()),
                "discriminator_loss": float(self.discriminator_loss.detach()),
                "discriminator_accuracy": self.discriminator_accuracy, "replaced_fraction": self.replaced_fraction}


class ElectraPretraining(nn.Module):
    """Generator + discriminator, trained together (see the module docstring). `discriminator` is an
    `EncoderModel` with the headless `embedding` task: `saved_model` is what checkpoints hold."""

    def __init__(self, discriminator: LmforgeModel, generator_scale: float = DEFAULT_GENERATOR_SCALE,
                 discriminator_weight: float = DEFAULT_DISCRIMINATOR_WEIGHT):
        super().__init__()
        config = discriminator.config
        if config.family != "encoder":
            raise ConfigError(f"replaced-token detection pretrains encoders, not a {config.family} model")
        if not discriminator_weight > 0:
            raise ConfigError(f"--discriminator-weight must be positive, got {discriminator_weight:g}")
        self.discriminator = discriminator
        self.detector = DetectionHead(config)
        init_weights(self.detector, config)
        self.generator = Generator(generator_config(config, generator_scale), config.d_model)
        self.discriminator_weight = discriminator_weight

    @classmethod
    def build(cls, config: ModelConfig, generator_scale: float = DEFAULT_GENERATOR_SCALE,
              discriminator_weight: float = DEFAULT_DISCRIMINATOR_WEIGHT) -> "ElectraPretraining":
        """A randomly initialised generator and discriminator for the encoder architecture `config`."""
        return cls(build_model(config, SAVED_TASK), generator_scale, discriminator_weight)

    @property
    def saved_model(self) -> LmforgeModel:
        """The model training checkpoints and final/ hold: the discriminator."""
        return self.discriminator

    def auxiliary_state_dict(self) -> dict[str, torch.Tensor]:
        """The training-only weights (detection head, generator) a resume needs besides `saved_model`'s."""
        return {f"{name}.{key}": value for name in ("detector", "generator")
                for key, value in getattr(self, name).state_dict().items()}

    def load_auxiliary_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("detector", "generator"):
            part = {key.split(".", 1)[1]: value for key, value in state.items() if key.startswith(f"{name}.")}
            getattr(self, name).load_state_dict(part, strict=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                detection_mask: torch.Tensor, sample_seed: torch.Tensor) -> ElectraOutput:
        """input_ids (B, T) with masked positions, labels (B, T) the original ids there (IGNORE_INDEX
        elsewhere), detection_mask (B, T) the tokens the discriminator is scored on (real, not special),
        sample_seed () the seed of this batch's sampling."""
        self.discriminator.check_input_ids(input_ids)
        embedding = self.discriminator.embed.weight  # (V, D), shared
        masked = labels != IGNORE_INDEX  # (B, T)
        targets = labels[masked]  # (N,)
        generator_logits = self.generator(self.discriminator.embed(input_ids), attention_mask, masked, embedding)
        generator_loss = (cross_entropy(generator_logits, targets) if targets.numel()
                          else generator_logits.sum() * 0.0)
        original = torch.where(masked, labels, input_ids)  # (B, T)
        corrupted = original.clone()
        corrupted[masked] = sample_tokens(generator_logits, int(sample_seed))
        detection_labels = replaced_labels(original, corrupted, detection_mask.bool())
        hidden = self.discriminator(corrupted, attention_mask=attention_mask).hidden_states  # (B, T, D)
        scored = detection_labels != IGNORE_INDEX
        logits = self.detector(hidden[scored])  # (M,)
        truth = detection_labels[scored].float()  # (M,)
        discriminator_loss = F.binary_cross_entropy_with_logits(logits.float(), truth)
        with torch.no_grad():
            accuracy = float(((logits > 0).float() == truth).float().mean()) if truth.numel() else 0.0
            replaced = float(truth.mean()) if truth.numel() else 0.0
        return ElectraOutput(generator_loss + self.discriminator_weight * discriminator_loss, generator_loss,
                             discriminator_loss, accuracy, replaced, detection_labels, corrupted)
