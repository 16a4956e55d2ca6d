"""Raw text -> tokens -> training batches.

(lmforge.readers streams the documents of .txt / .jsonl / .gz files and folders; re-exported here)
corpus      `prepare_corpus` -> memory-mapped token shards; `TokenShards` opens them
stats       `unigram_entropy(shards)`: the loss of a model that knows only token counts
objectives  CausalLM, MaskedLM, ReplacedTokenDetection, SpanCorruption, TextInfilling: windows -> batches for `model(**batch)`
labelled    labelled readers: classification, CoNLL token classification, parallel text; `LabelSet`
sampler     `ResumableSampler`: deterministic, resumable, sharded across ranks
loader      `pretraining_batches(shards, objective, batch_size, seq_len, sampler)`, `labelled_batches`
collate     `collate(examples, pad_id)`: padding labelled examples into tensors
"""

from .collate import IGNORE_INDEX, attention_mask_for, collate, pad
from .corpus import TokenShards, prepare_corpus
from .stats import unigram_entropy
from .loader import labelled_batches, pretraining_batches, pretraining_windows
from .objectives import OBJECTIVES, CausalLM, MaskedLM, ReplacedTokenDetection, SpanCorruption, TextInfilling, pack
from ..readers import Document, iter_documents, iter_texts
from .sampler import ResumableSampler
from .labelled import LabelSet, TaskData, read_classification, read_conll, read_parallel

__all__ = [
    "IGNORE_INDEX", "collate", "pad", "attention_mask_for", "TokenShards", "prepare_corpus", "unigram_entropy",
    "labelled_batches", "pretraining_batches", "pretraining_windows", "OBJECTIVES", "CausalLM", "MaskedLM",
    "ReplacedTokenDetection", "SpanCorruption",
    "TextInfilling", "pack", "Document", "iter_documents", "iter_texts", "ResumableSampler", "LabelSet",
    "TaskData", "read_classification", "read_conll", "read_parallel",
]
