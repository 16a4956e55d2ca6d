"""One module per Hugging Face model type; FORMATS maps `model_type` to its description."""

from . import bart, bert, distilbert, gpt2, t5

FORMATS = {f.model_type: f for f in (gpt2.FORMAT, bert.BERT, bert.ROBERTA, distilbert.FORMAT, bart.FORMAT, t5.FORMAT)}

__all__ = ["FORMATS"]
