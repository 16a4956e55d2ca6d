"""One module per Hugging Face model type (or family of types); FORMATS maps `model_type` to its description."""

from . import bart, bert, distilbert, gpt2, llama, t5

FORMATS = {f.model_type: f for f in (gpt2.FORMAT, bert.BERT, bert.ROBERTA, distilbert.FORMAT, bart.FORMAT, t5.FORMAT,
                                     llama.LLAMA, llama.MISTRAL, llama.QWEN2, llama.QWEN3)}

__all__ = ["FORMATS"]
