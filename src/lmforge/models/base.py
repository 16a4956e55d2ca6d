"""What every lmforge model shares: the token embedding, the task head, the loss, saving."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, InputError
from ..nn.cache import KVCache
from ..nn.positions import LearnedPositions, RelativePositionBias
from .heads import LMHead, MaskedLMHead, SequenceClassificationHead, TokenClassificationHead

TASKS = ("causal-lm", "masked-lm", "seq2seq-lm", "sequence-classification", "token-classification", "embedding")
FAMILY_TASKS = {
    "decoder": ("causal-lm", "sequence-classification", "token-classification", "embedding"),
    "encoder": ("masked-lm", "sequence-classification", "token-classification", "embedding"),
    "encoder-decoder": ("seq2seq-lm", "embedding"),
}
DEFAULT_TASK = {"decoder": "causal-lm", "encoder": "masked-lm", "encoder-decoder": "seq2seq-lm"}
IGNORE_INDEX = -100  # label value that takes no part in the loss


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
        self.tokenizer = None  # attached by lmforge.load when the checkpoint has one
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # shared by stacks and tied heads
        self.head: nn.Module | None = {
            "causal-lm": LMHead, "seq2seq-lm": LMHead, "masked-lm": MaskedLMHead,
            "sequence-classification": SequenceClassificationHead,
            "token-classification": TokenClassificationHead,
        }.get(task, lambda _: None)(config)

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
        if self.config.positions in ("learned", "sinusoidal") and length > self.config.max_positions:
            raise InputError(f"{name} has {length} tokens but the model accepts at most "
                             f"{self.config.max_positions}; truncate the input to {self.config.max_positions} tokens")

    def lm_logits(self, hidden: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, V); a decoding cache may carry the head's matrix in its decoding layout."""
        if cache is not None and cache.output_weight is not None:
            return self.head(hidden, self.embed.weight, cache.output_weight)
        return self.head(hidden, self.embed.weight)

    def finish(self, hidden: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor | None,
               pooled: torch.Tensor | None = None, encoder_hidden: torch.Tensor | None = None,
               cache: KVCache | None = None, last_only: bool = False) -> ModelOutput:
        """Apply the task head to the last hidden states (B, T, d) and compute the loss when labels are
        given. `last_only`: language-model logits for the last position only (B, 1, V), for decoding."""
        from .heads import sentence_embedding

        if self.task in ("causal-lm", "seq2seq-lm", "masked-lm"):
            logits = self.lm_logits(hidden[:, -1:] if last_only else hidden, cache)
        elif self.task == "sequence-classification":
            logits = self.head(hidden, mask, pooled)
        elif self.task == "token-classification":
            logits = self.head(hidden)
        else:
            logits = sentence_embedding(encoder_hidden if encoder_hidden is not None else hidden, mask)
        loss = None if labels is None else self.loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, hidden_states=hidden, encoder_hidden_states=encoder_hidden)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over labels != -100 (causal LM: each position predicts the next label);
        mean squared error for a one-output sequence regressor."""
        if self.task == "embedding":
            raise InputError("the embedding task has no labels; use a sequence-classification head to train")
        if self.task == "sequence-classification" and self.config.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        if self.task == "causal-lm":  # position t predicts token t+1; the last position predicts nothing
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T), no copy of the logits
        if logits.shape[:-1] != labels.shape:
            raise InputError(f"labels have shape {tuple(labels.shape)} but the {self.task} head "
                             f"expects {tuple(logits.shape[:-1])}")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long(),
                               ignore_index=IGNORE_INDEX)

    # ---- utilities ----------------------------------------------------------------------------------
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
        if batch == 1 and isinstance(self.head, LMHead) and self.device.type == "cpu":  # a CPU BLAS effect
            cache.output_weight = self.head.decoding_weight(self.embed.weight)  # (d, V)
        return cache

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Generate token ids with the KV cache (greedy, sampling, beam search); see `lmforge.infer.generate`."""
        from ..infer.generate import generate

        return generate(self, input_ids, attention_mask, **options)

    def save(self, path: str | Path, card: dict | None = None) -> Path:
        """Write the checkpoint folder atomically (config.json, model.safetensors, tokenizer, README.md)."""
        from ..checkpoint.io import save_checkpoint

        return save_checkpoint(self, path, card=card)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) for matrices and embeddings, zero biases, unit norms. Pre-norm
        models scale each residual branch's output projection by 1/sqrt(2 * layers) (GPT-2)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Embedding, LearnedPositions, RelativePositionBias)):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, (LMHead, MaskedLMHead)) and module.weight is not None:
                nn.init.normal_(module.weight, std=std)
            elif hasattr(module, "weight") and isinstance(getattr(module, "weight"), nn.Parameter) \
                    and module.weight.dim() == 1:  # LayerNorm, RMSNorm
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.config.norm_placement == "pre":
            depth = self.config.n_layers + (self.config.decoder_layers if self.config.is_encoder_decoder else 0)
            for name, param in self.named_parameters():
                if name.endswith(("self_attn.o.weight", "cross_attn.o.weight", "mlp.down.weight")):
                    nn.init.normal_(param, std=std / math.sqrt(2 * depth))

    def extra_repr(self) -> str:
        return f"task={self.task!r}, family={self.config.family!r}"
