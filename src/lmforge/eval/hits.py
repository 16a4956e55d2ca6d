"""Which test examples a classifier gets right, one by one, in file order: the input of paired tests
(lmforge.eval.paired) that compare two models on the same examples."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import LabelSet
from ..finetune.batching import sorted_batches
from ..finetune.model import load_model, require_tokenizer
from ..finetune.scoring import label_names
from ..finetune.tasks import read_task_data


def classification_hits(model, data: str | Path, *, data_options=None, batch_size: int = 32) -> list[bool]:
    """For each example of the classification file `data` (in file order): did `model` (a checkpoint folder
    or a loaded model with a sequence-classification head) predict its label? `data_options` must be the
    ones it was fine-tuned with (the same max_length). Labels the model does not know are a DataError."""
    model = load_model(model) if isinstance(model, (str, Path)) else model
    tokenizer = require_tokenizer(model, str(data))
    examples = read_task_data("classify", data, tokenizer, LabelSet(label_names(model)), data_options,
                              model.config).examples
    hits: list[bool] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in sorted_batches(examples, batch_size, tokenizer.padding_id, keep_order=True):
                predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)  # (B,)
                hits.extend((predicted == batch["labels"]).tolist())
    finally:
        model.train(was_training)
    return hits
