"""What every lmforge model shares: the token embedding, the task head, the loss, saving."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, InputError
from ..nn.cache import KVCache
from ..nn.positions import LearnedPositions, RelativePositionBias
from . import services
from .heads import FAMILY_TASKS, HEADS, Head, HeadInputs, LMHead, MaskedLMHead


@dataclass
class ModelOutput:
    """logits: (B, T, V) for language modelling, (B, num_labels) for sequence classification,
    (B, T, num_labels) for token classification, (B, d) normalised sentence embeddings for
    `embedding`. hidden_states: the last layer (of the decoder, for encoder-decoders)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    encoder_hidden_states: torch.Tensor | None = None


class LmforgeModel(nn.Module):
    """Base class of the three families. Subclasses own their stacks and implement `forward`."""

    def __init__(self, config: ModelConfig, task: str):
        super().__init__()
        config.validate()
        allowed = FAMILY_TASKS[config.family]
        if task not in allowed:
            raise ConfigError(f"task {task!r} is not available for a {config.family} model; "
                              f"choose one of: {', '.join(allowed)}")
        self.config, self.task = config, task
        self.tokenizer = None  # see attach_tokenizer
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # shared by stacks and tied heads
        self.head: Head = HEADS[task](config)

    def attach_tokenizer(self, tokenizer) -> "LmforgeModel":
        """Make `tokenizer` the model's own: it is saved with the model and used by pipelines and
        generation from text. Returns the model."""
        self.tokenizer = tokenizer
        return self

    # ---- shared forward pieces ----------------------------------------------------------------
    def check_input_ids(self, input_ids: torch.Tensor, past: int = 0, name: str = "input_ids") -> None:
        """Raise `InputError` for ids that are not (B, T) integers inside the vocabulary and the position table."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise InputError(f"{name} must be a (batch, length) tensor of integer token ids, "
                             f"got shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}")
        if input_ids.numel() == 0:
            raise InputError(f"{name} is empty; give at least one token per sequence")
        low, high = (int(bound) for bound in torch.aminmax(input_ids))
        if low < 0 or high >= self.config.vocab_size:
            bad = high if high >= self.config.vocab_size else low
            raise InputError(f"{name} holds token id {bad}, outside the model's vocabulary "
                             f"(0..{self.config.vocab_size - 1}); use the tokenizer the model was trained with")
        length = past + input_ids.shape[1]
        if self.config.positions_bounded and length > self.config.max_positions:
            raise InputError(f"{name} has {length} tokens but the model accepts at most "
                             f"{self.config.max_positions}; truncate the input to {self.config.max_positions} tokens")

    def head_inputs(self, mask: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                    encoder_hidden: torch.Tensor | None = None, cache: KVCache | None = None) -> HeadInputs:
        """What the head reads besides the hidden states; a decoding cache may carry the output matrix
        in its decoding layout."""
        return HeadInputs(self.embed.weight, mask, pooled, encoder_hidden,
                          cache.output_weight if cache is not None else None)

    def lm_logits(self, hidden: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, V) through a language-model head."""
        return self.head(hidden, self.head_inputs(cache=cache))

    def finish(self, hidden: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor | None,
               pooled: torch.Tensor | None = None, encoder_hidden: torch.Tensor | None = None,
               cache: KVCache | None = None, last_only: bool = False) -> ModelOutput:
        """Apply the task head to the last hidden states (B, T, d) and compute the loss when labels are
        given. `last_only`: language-model logits for the last position only (B, 1, V), for decoding."""
        inputs = self.head_inputs(mask, pooled, encoder_hidden, cache)
        logits = self.head(hidden[:, -1:] if (last_only and self.head.language_model) else hidden, inputs)
        if logits.dtype != torch.float32 and logits.dtype == self.dtype:
            logits = logits.float()  # bf16/fp16 weights (an inference format): logits are returned in float32
        loss = None if labels is None else self.loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, hidden_states=hidden, encoder_hidden_states=encoder_hidden)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The head's loss: cross-entropy over labels != -100 (causal LM: each position predicts the next
        label); mean squared error for a one-output sequence regressor."""
        return self.head.loss(logits, labels)

    # ---- utilities ----------------------------------------------------------------------------------
    @property
    def inputs_from_labels(self) -> bool:
        """Whether `forward` builds inputs from `labels` (an encoder-decoder's decoder inputs), so a batch keeps
        its labels even when only outputs are wanted."""
        return False

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def num_parameters(self, backbone_only: bool = False) -> int:
        """Number of trainable parameters (each shared tensor counted once). `backbone_only`
        leaves out the task head, which is what published parameter counts describe."""
        params = {id(p): p for name, p in self.named_parameters()
                  if not (backbone_only and name.startswith("head."))}
        return sum(p.numel() for p in params.values())

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty, preallocated KV cache for decoding up to `max_len` tokens. For a single row of a
        language model it also holds the output matrix in the layout that decodes it fastest."""
        c = self.config
        n_layers = c.decoder_layers if c.is_encoder_decoder else c.n_layers
        cache = KVCache(n_layers, batch, c.kv_heads, c.head_dim, max_len, dtype=self.dtype, device=self.device)
        cache.output_weight = self.decoding_weight(batch)
        return cache

    def decoding_weight(self, batch: int) -> torch.Tensor | None:
        """The LM head's matrix in the layout that decodes `batch` rows fastest, or None (the plain matrix)."""
        return self.head.decoding_weight(self.embed.weight, batch)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Generate token ids with the KV cache (greedy, sampling, beam search); see `lmforge.infer.generate`."""
        return services.generate(self, input_ids, attention_mask, **options)

    def save(self, path: str | Path, card: dict | None = None) -> Path:
        """Write the checkpoint folder atomically (config.json, model.safetensors, tokenizer, README.md);
        see `lmforge.checkpoint.io.save_checkpoint`."""
        return services.save(self, path, card=card)

    def init_weights(self) -> None:
        """Normal(0, init_std) for matrices and embeddings, zero biases, unit norms (see `init_weights`)."""
        init_weights(self, self.config)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, family={self.config.family!r}"


@torch.no_grad()
def init_weights(module: nn.Module, config: ModelConfig) -> None:
    """Initialise `module` (a model, or a part trained beside one) as `config` says: Normal(0, init_std)
    for matrices and embeddings, zero biases, unit norms. Pre-norm models scale each residual branch's
    output projection by 1/sqrt(2 * layers) (GPT-2)."""
    std = config.init_std
    for part in module.modules():
        if isinstance(part, nn.Linear):
            nn.init.normal_(part.weight, std=std)
            if part.bias is not None:
                nn.init.zeros_(part.bias)
        elif isinstance(part, (nn.Embedding, LearnedPositions, RelativePositionBias)):
            nn.init.normal_(part.weight, std=std)
        elif isinstance(part, (LMHead, MaskedLMHead)) and part.weight is not None:
            nn.init.normal_(part.weight, std=std)
        elif hasattr(part, "weight") and isinstance(getattr(part, "weight"), nn.Parameter) \
                and part.weight.dim() == 1:  # LayerNorm, RMSNorm
            nn.init.ones_(part.weight)
            if getattr(part, "bias", None) is not None:
                nn.init.zeros_(part.bias)
    if config.norm_placement == "pre":
        depth = config.n_layers + (config.decoder_layers if config.is_encoder_decoder else 0)
        for name, param in module.named_parameters():
            if name.endswith(("self_attn.o.weight", "cross_attn.o.weight", "mlp.down.weight")):
                nn.init.normal_(param, std=std / math.sqrt(2 * depth))
