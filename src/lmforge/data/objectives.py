"""Self-supervised objectives: raw token windows -> the batches each family pretrains on.

Every objective is a callable `objective(windows, rng) -> dict of torch tensors` that feeds `model(**batch)`:
  CausalLM        decoder-only   {"input_ids", "attention_mask", "labels"} (labels = inputs; the model shifts)
  MaskedLM        encoder-only   {"input_ids", "attention_mask", "labels"} (-100 except at chosen positions)
  SpanCorruption  T5             {"input_ids", "attention_mask", "labels"} (labels = sentinels + spans + eos)
  TextInfilling   BART           {"input_ids", "attention_mask", "labels"} (labels = the original text)
  ReplacedTokenDetection  ELECTRA  MaskedLM's batch + {"detection_mask", "sample_seed"} (lmforge.models.electra)
`windows` are 1-D arrays of raw token ids of length `objective.window_length(seq_len)`, chosen so that
the model inputs are at most `seq_len` long. `rng` is a numpy Generator (the batch loader seeds one per
batch from the sampler state, so a resumed run draws the same masks).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import DataError
from ..models.build import build_model
from ..models.electra import DEFAULT_DISCRIMINATOR_WEIGHT, DEFAULT_GENERATOR_SCALE, ElectraPretraining
from ..tokenizer import Tokenizer
from .collate import IGNORE_INDEX, attention_mask_for, pad


class Objective:
    """What the pretraining loop needs to know about an objective besides its batches (the registry's
    entries own these decisions; nothing compares objective names)."""

    family: str  # the model family it trains
    title: str  # its name in model cards
    masks_tokens = False  # whether it takes a masking probability (--mask-probability)
    has_generator = False  # whether it trains a generator beside the model (--generator-scale)
    loss = None  # the Trainer's loss hook, (model, batch) -> loss; None: the model's own loss on the batch

    @staticmethod
    def pretraining_model(config: ModelConfig, generator: dict | None = None):
        """The module this objective trains, randomly initialised: the model of `config` itself."""
        return build_model(config)


class CausalLM(Objective):
    """Next-token prediction on packed fixed-length blocks. Token shards already hold documents back to back,
    each followed by the separator (eos), so a window is a packed block; `pack` does the same for documents
    held in memory."""

    family = "decoder"  # the model family it trains
    title = "causal language modelling"  # its name in model cards

    def __init__(self, tokenizer: Tokenizer | None = None):
        self.tokenizer = tokenizer

    def window_length(self, seq_len: int) -> int:
        return seq_len

    def __call__(self, windows: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        ids = torch.from_numpy(np.stack(windows).astype(np.int64))  # (B, T)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def pack(documents: Iterable[Sequence[int]], block_size: int, separator_id: int | None) -> Iterator[np.ndarray]:
    """Concatenate documents (each followed by `separator_id`) and cut the stream into blocks of `block_size`
    ids; the incomplete last block is dropped."""
    buffer = np.empty(0, dtype=np.int64)
    for document in documents:
        tail = [] if separator_id is None else [separator_id]
        buffer = np.concatenate([buffer, np.asarray(list(document) + tail, dtype=np.int64)])
        while len(buffer) >= block_size:
            yield buffer[:block_size]
            buffer = buffer[block_size:]


def _wrapping_ids(tokenizer: Tokenizer) -> tuple[int | None, int | None]:
    """The ids put around a sequence: [CLS] ... [SEP] (BERT) or <s> ... </s> (RoBERTa, BART)."""
    if tokenizer.cls_id is not None and tokenizer.sep_id is not None:
        return tokenizer.cls_id, tokenizer.sep_id
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    return (bos, eos) if bos != eos else (None, eos)


def _wrap(tokens: np.ndarray, first: int | None, last: int | None) -> np.ndarray:
    parts = ([[first]] if first is not None else []) + [tokens] + ([[last]] if last is not None else [])
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def _required(tokenizer: Tokenizer, role: str, objective: str, hint: str) -> int:
    index = tokenizer.special_id(role)
    if index is None:
        raise DataError(f"{objective} needs a {role} token and this tokenizer has none; {hint}")
    return index


class MaskedLM(Objective):
    """BERT masking: `probability` (15%) of the maskable tokens of each sequence are chosen; of those 80%
    become [MASK], 10% a random token, 10% stay. Special and pad tokens are never chosen. Labels hold the
    original id at chosen positions and -100 elsewhere. `whole_word` chooses whole words (all their
    sub-tokens) until the count is reached, never exceeding it."""

    family = "encoder"  # the model family it trains
    title = "masked language modelling (15%, 80/10/10)"  # its name in model cards
    short = "masked LM"  # its name in messages
    masks_tokens = True

    @staticmethod
    def loss(model, batch: dict):
        """The masked-LM loss with the head applied at the labelled (~15%) positions only: the same loss as
        the model's own, 1.4-1.7x faster per step for a small BERT whose vocabulary projection dominates."""
        return model(**batch, labelled_only=True).loss

    def __init__(self, tokenizer: Tokenizer, probability: float = 0.15, whole_word: bool = False,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1):
        self.tokenizer, self.probability, self.whole_word = tokenizer, probability, whole_word
        self.mask_fraction, self.random_fraction = mask_fraction, random_fraction
        self.mask_id = _required(tokenizer, "mask", self.short, "train a wordpiece tokenizer or add --special mask=<mask>")
        self.pad_id = tokenizer.padding_id
        self.special = np.array(sorted(tokenizer.special_ids), dtype=np.int64)
        self.random_pool = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special)  # ids a random replacement may take
        self.word_starts = tokenizer.word_starts() if whole_word else None
        self.first, self.last = _wrapping_ids(tokenizer)

    def window_length(self, seq_len: int) -> int:
        return seq_len - (self.first is not None) - (self.last is not None)

    def __call__(self, windows: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else np.random.default_rng()
        sequences = [_wrap(np.asarray(w, dtype=np.int64), self.first, self.last) for w in windows]
        ids = pad(sequences, self.pad_id).numpy()  # (B, T)
        inputs, labels = self.mask(ids, rng)
        return {"input_ids": torch.from_numpy(inputs), "attention_mask": attention_mask_for(sequences),
                "labels": torch.from_numpy(labels)}

    def mask(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mask a (B, T) array of ids; returns (inputs, labels), both (B, T)."""
        inputs, labels = ids.copy(), np.full_like(ids, IGNORE_INDEX)
        maskable = ~np.isin(ids, self.special)  # (B, T)
        for row in range(ids.shape[0]):
            chosen = self._choose(ids[row], maskable[row], rng)
            labels[row, chosen] = ids[row, chosen]
            action = rng.random(len(chosen))
            to_mask = chosen[action < self.mask_fraction]
            to_random = chosen[(action >= self.mask_fraction) & (action < self.mask_fraction + self.random_fraction)]
            inputs[row, to_mask] = self.mask_id
            inputs[row, to_random] = rng.choice(self.random_pool, size=len(to_random))
        return inputs, labels

    def _choose(self, ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Positions to predict in one sequence: round(probability * maskable count), at least one."""
        candidates = np.flatnonzero(maskable)
        if len(candidates) == 0:
            return candidates
        target = max(1, round(self.probability * len(candidates)))
        if not self.whole_word:
            return np.sort(rng.choice(candidates, size=target, replace=False))
        starts = self.word_starts[ids[candidates]]
        starts[0] = True
        starts[1:] |= np.diff(candidates) > 1  # a special token in between also ends a word
        words = np.split(candidates, np.flatnonzero(starts)[1:])
        chosen, count = [], 0
        for word in rng.permutation(len(words)):
            if count + len(words[word]) <= target:
                chosen.append(words[word])
                count += len(words[word])
            if count == target:
                break
        return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


class ReplacedTokenDetection(MaskedLM):
    """ELECTRA's inputs (Clark et al. 2020): masked-LM masking for the generator, `probability` (15%) of the
    maskable tokens chosen, 85% of them shown as [MASK] and 15% kept (no random tokens: the generator's
    samples are the replacements). Besides the masked-LM batch it gives `detection_mask` (B, T), the real,
    non-special tokens the discriminator is scored on, and `sample_seed`, drawn from the batch's generator,
    which seeds the sampling of replacements (`lmforge.models.electra`)."""

    title = "ELECTRA replaced-token detection (15% masked, generator samples)"
    short = "replaced-token detection"
    has_generator = True

    @staticmethod
    def pretraining_model(config: ModelConfig, generator: dict | None = None):
        """An `ElectraPretraining` (generator + discriminator; `generator` holds its `scale` and `weight`)
        whose `saved_model` is the encoder that checkpoints hold."""
        options = generator or {}
        return ElectraPretraining.build(config, options.get("scale", DEFAULT_GENERATOR_SCALE),
                                        options.get("weight", DEFAULT_DISCRIMINATOR_WEIGHT))

    @staticmethod
    def loss(model, batch: dict):
        """ELECTRA's loss (generator MLM + weight x discriminator) and its parts for the training log."""
        out = model(**batch)
        return out.loss, out.parts()

    def __init__(self, tokenizer: Tokenizer, probability: float = 0.15, whole_word: bool = False,
                 mask_fraction: float = 0.85, random_fraction: float = 0.0):
        super().__init__(tokenizer, probability, whole_word, mask_fraction, random_fraction)

    def __call__(self, windows: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else np.random.default_rng()
        batch = super().__call__(windows, rng)
        original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])  # (B, T)
        special = torch.from_numpy(np.isin(original.numpy(), self.special))
        batch["detection_mask"] = batch["attention_mask"].bool() & ~special
        batch["sample_seed"] = torch.tensor(int(rng.integers(2**62)))
        return batch


class SpanCorruption(Objective):
    """T5 span corruption: `noise_density` (15%) of the tokens, in spans of mean length `mean_span_length`
    (3), are dropped from the input; each dropped span becomes one sentinel <extra_id_k> in the input, and
    the target lists every sentinel followed by the span it stands for, then eos. All examples of one
    length give the same input and target lengths."""

    family = "encoder-decoder"  # the model family it trains
    title = "T5 span corruption"  # its name in model cards

    def __init__(self, tokenizer: Tokenizer, noise_density: float = 0.15, mean_span_length: float = 3.0):
        self.tokenizer, self.noise_density, self.mean_span_length = tokenizer, noise_density, mean_span_length
        self.sentinels = np.array(tokenizer.sentinel_ids, dtype=np.int64)
        if len(self.sentinels) == 0:
            raise DataError("span corruption needs sentinel tokens <extra_id_0>, ...; train a unigram tokenizer "
                            "(lmforge tokenizer train --kind unigram) or use a T5 tokenizer")
        self.eos_id = _required(tokenizer, "eos", "span corruption", "use a T5-style tokenizer with </s>")
        self.pad_id = tokenizer.padding_id

    def span_counts(self, length: int) -> tuple[int, int]:
        """(noise tokens, noise spans) for a sequence of `length` tokens."""
        noise = min(max(round(length * self.noise_density), 1), length - 1)
        spans = max(1, round(noise / self.mean_span_length))
        return noise, min(spans, noise, length - noise)

    def window_length(self, seq_len: int) -> int:
        """The longest raw length whose corrupted input (kept tokens + one sentinel per span + eos) fits
        in `seq_len` tokens."""
        def input_length(length: int) -> int:
            noise, spans = self.span_counts(length)
            return length - noise + spans + 1

        if seq_len < 4:
            raise DataError(f"span corruption needs a sequence length of at least 4, got {seq_len}")
        length = 2
        while input_length(length + 1) <= seq_len:
            length += 1
        return length

    def noise_mask(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """A bool (length,) array: True where a token is noise. Starts with kept tokens, spans alternate."""
        noise, spans = self.span_counts(length)
        if spans > len(self.sentinels):
            raise DataError(f"{spans} noise spans need more than the tokenizer's {len(self.sentinels)} sentinels; "
                            "use a shorter sequence length")
        noise_lengths = _random_partition(noise, spans, rng)
        kept_lengths = _random_partition(length - noise, spans, rng)
        runs = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, noise, ...
        return np.repeat(np.tile([False, True], spans), runs)

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, target ids) for one raw window."""
        tokens = np.asarray(tokens, dtype=np.int64)
        noise = self.noise_mask(len(tokens), rng)
        span_start = noise & ~np.concatenate([[False], noise[:-1]])  # first token of each noise span
        span_number = np.cumsum(span_start) - 1  # (T,) which span a noise token belongs to
        inputs = np.where(span_start, self.sentinels[np.maximum(span_number, 0)], tokens)[~noise | span_start]
        starts_among_noise = np.flatnonzero(span_start[noise])
        targets = np.insert(tokens[noise], starts_among_noise, self.sentinels[: len(starts_among_noise)])
        return np.append(inputs, self.eos_id), np.append(targets, self.eos_id)

    def __call__(self, windows: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else np.random.default_rng()
        pairs = [self.corrupt(w, rng) for w in windows]
        inputs, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        return {"input_ids": pad(inputs, self.pad_id), "attention_mask": attention_mask_for(inputs),
                "labels": pad(targets, IGNORE_INDEX)}


def _random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`total` items cut into `parts` non-empty runs at random: an int array of run lengths."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


class TextInfilling(Objective):
    """BART text infilling: spans with Poisson(`poisson_lambda`=3) lengths are each replaced by a single mask
    token until `mask_ratio` (30%) of the tokens are masked (a zero-length span inserts a mask). With
    `permute_sentences` the sentences of the input are shuffled first. The target is the original text."""

    family = "encoder-decoder"  # the model family it trains
    title = "BART text infilling"  # its name in model cards

    def __init__(self, tokenizer: Tokenizer, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                 permute_sentences: bool = False):
        self.tokenizer, self.mask_ratio, self.poisson_lambda = tokenizer, mask_ratio, poisson_lambda
        self.permute_sentences = permute_sentences
        self.mask_id = _required(tokenizer, "mask", "text infilling",
                                 "train the tokenizer with --special mask=<mask> (BART uses <mask>)")
        self.pad_id = tokenizer.padding_id
        self.first, self.last = _wrapping_ids(tokenizer)
        self.sentence_ends = self._sentence_ends(tokenizer)

    @staticmethod
    def _sentence_ends(tokenizer: Tokenizer) -> np.ndarray:
        """A bool array over the vocabulary: True for tokens that end a sentence (. ! ? or a separator)."""
        texts = tokenizer.backend.decode_batch([[i] for i in range(tokenizer.vocab_size)], skip_special_tokens=False)
        ends = np.array([text.rstrip().endswith((".", "!", "?")) for text in texts], dtype=bool)
        for role in ("eos", "sep"):
            if tokenizer.special_id(role) is not None:
                ends[tokenizer.special_id(role)] = True
        return ends

    def window_length(self, seq_len: int) -> int:
        return seq_len - (self.first is not None) - (self.last is not None)

    def permute(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The sentences of `tokens` in a random order (a trailing unfinished sentence counts as one)."""
        cuts = np.flatnonzero(self.sentence_ends[tokens[:-1]]) + 1
        sentences = np.split(tokens, cuts)
        return np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])

    def infill(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`tokens` with round(mask_ratio * len) of them masked, each span collapsed to one mask token."""
        to_mask = round(self.mask_ratio * len(tokens))
        if to_mask == 0:
            return tokens
        lengths = self._span_lengths(to_mask, rng)
        kept = len(tokens) - to_mask
        if len(lengths) > kept + 1:  # more spans than gaps between kept tokens: fold the rest into the last
            lengths = np.append(lengths[:kept], lengths[kept:].sum())
        gaps = np.sort(rng.choice(kept + 1, size=len(lengths), replace=False))  # kept tokens before each span
        pieces, position, emitted = [], 0, 0
        for gap, length in zip(gaps, lengths):
            pieces += [tokens[position:position + gap - emitted], [self.mask_id]]
            position += gap - emitted + length
            emitted = gap
        pieces.append(tokens[position:])
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces])

    def _span_lengths(self, total: int, rng: np.random.Generator) -> np.ndarray:
        """Poisson span lengths drawn until they cover `total` tokens; the last one is cut to fit exactly."""
        lengths = np.empty(0, dtype=np.int64)
        while lengths.sum() < total:
            lengths = np.append(lengths, rng.poisson(self.poisson_lambda, size=max(4, total // 2)))
        ends = np.cumsum(lengths)
        count = int(np.searchsorted(ends, total)) + 1  # spans up to the one that reaches `total`
        lengths = lengths[:count].copy()
        lengths[-1] -= ends[count - 1] - total
        return lengths

    def __call__(self, windows: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else np.random.default_rng()
        originals, corrupted = [], []
        for window in windows:
            tokens = np.asarray(window, dtype=np.int64)
            source = self.permute(tokens, rng) if self.permute_sentences and len(tokens) > 1 else tokens
            originals.append(_wrap(tokens, self.first, self.last))
            corrupted.append(_wrap(self.infill(source, rng), self.first, self.last))
        return {"input_ids": pad(corrupted, self.pad_id), "attention_mask": attention_mask_for(corrupted),
                "labels": pad(originals, IGNORE_INDEX)}


# The one registry of pretraining objectives, by the name `lmforge pretrain --objective` takes.
OBJECTIVES = {"clm": CausalLM, "mlm": MaskedLM, "span": SpanCorruption, "denoise": TextInfilling,
              "rtd": ReplacedTokenDetection}
