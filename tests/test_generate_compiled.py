"""The compiled decoding step (`generate(..., compile=True)`, `lmforge generate --compile`): in float32 the same
tokens as eager decoding and as Hugging Face greedy (random GPT-2 and Llama-shaped models, left-padded batches),
one compilation per model and batch shape (no recompiles from step to step or call to call, no graph breaks), a
real compiler failure falls back to eager decoding with one warning, and misuse is refused."""

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.errors import InputError  # noqa: E402
from lmforge.infer import generate  # noqa: E402
from lmforge.nn.quantized import dynamic_available  # noqa: E402

from torch._dynamo.utils import counters  # noqa: E402

VOCAB = 99
NEW_TOKENS = 6


def hf_gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=98, eos_token_id=3,
        pad_token_id=0, initializer_range=0.2))


def hf_llama():  # grouped-query attention, rotary positions, a gated (SwiGLU) MLP, RMSNorm
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=98, eos_token_id=3, pad_token_id=0,
        initializer_range=0.2))


def converted(hf, folder, dtype="fp32"):
    hf.save_pretrained(folder)
    return lmforge.load(folder, dtype=dtype).eval()


def left_padded(seed: int):
    """4 prompts of lengths 6, 3, 5, 1, left-padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(4, 6, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate([6, 3, 5, 1]):
        ids[row, 6 - length:] = torch.randint(4, VOCAB - 1, (length,), generator=generator)
        mask[row, 6 - length:] = 1
    return ids, mask


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def graph_breaks() -> int:
    return sum(counters["graph_break"].values())


@pytest.mark.slow  # compiling takes 10-60 s on a busy 2-core CPU (less once inductor's disk cache has the kernels)
@pytest.mark.parametrize("builder", [hf_gpt2, hf_llama])
def test_compiled_greedy_matches_eager_and_hugging_face(builder, tmp_path):
    torch.manual_seed(0)
    hf = builder().eval()
    model = converted(hf, tmp_path)
    ids, mask = left_padded(seed=1)
    with torch.inference_mode():
        expected = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    before, breaks = graphs(), graph_breaks()
    compiled = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert graphs() == before + 1  # one graph for all the compiled steps
    assert graph_breaks() == breaks
    assert torch.equal(compiled, eager)
    assert torch.equal(compiled, expected)
    other_ids, _ = left_padded(seed=2)  # the same shapes: no new compilation
    again = generate(model, other_ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert graphs() == before + 1
    assert torch.equal(again, generate(model, other_ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[]))


@pytest.mark.slow
def test_compiled_streaming_and_stop_tokens_match_eager(tmp_path):
    """A stop token (rows finish at different steps) and `stream`: the same tokens as eager decoding."""
    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path)
    ids, mask = left_padded(seed=3)
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS)
    stop = int(eager[0, 6 + 1])  # row 0's second new token ends its row early
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=[stop])
    compiled = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=[stop], compile=True)
    assert torch.equal(compiled, eager)
    streamed = torch.stack(list(lmforge.infer.stream(
        model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=[stop], compile=True)), dim=1)
    assert torch.equal(streamed, eager[:, 6:6 + streamed.shape[1]])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [
    "int8",
    pytest.param("int8-dynamic", marks=pytest.mark.skipif(not dynamic_available(), reason="no fbgemm int8 kernels"))])
@pytest.mark.parametrize("rows", [1, 4])
def test_compiled_int8_runs_whole_and_close_to_eager(tmp_path, dtype, rows):
    """int8-dynamic: fbgemm's int8 product is an opaque operator in the compiled graph; int8 (weight-only): one row
    streams the codes in inductor's loop. No graph break; the tokens mostly equal eager's (activation codes, or
    eager's bf16 activations in `_weight_int8pack_mm`, round differently)."""
    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path, dtype=dtype)
    ids, mask = left_padded(seed=4)
    ids, mask = ids[:rows], mask[:rows]
    breaks = graph_breaks()
    compiled = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert graph_breaks() == breaks
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert (compiled == eager).float().mean() >= 0.9


@pytest.mark.slow
def test_compiled_one_row_float32_keeps_no_transposed_copies_of_the_blocks(tmp_path):
    """Compiled one-row steps stream the blocks' own matrices: the eager step before them makes no transposed
    copy (a third more memory at gpt2 size); eager decoding of the same model still makes and reads them."""
    from lmforge.nn.decoding_linear import DecodingLinear

    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path)
    ids = torch.tensor([[5, 17, 42]])
    layers = [m for m in model.modules() if isinstance(m, DecodingLinear)]
    compiled = generate(model, ids, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert not any("transposed" in layer._decoding._copies for layer in layers)
    eager = generate(model, ids, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert any("transposed" in layer._decoding._copies for layer in layers)
    assert torch.equal(compiled, eager)


@pytest.mark.slow
@pytest.mark.parametrize("rows", [1, 4])
def test_compiled_bf16_compiles_and_stays_close_to_eager(tmp_path, rows):
    """bf16 weights, one row (the LM head's packed copy on a CPU with bf16 units, which tracing used to read as
    a plain matrix: compiling failed and decoding fell back to eager) and a batch: one graph, no fallback warning,
    tokens close to eager bf16's (the compiled step fuses elementwise ops in float32, eager rounds each to bf16)."""
    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path, dtype="bf16")
    ids, mask = left_padded(seed=5)
    ids, mask = ids[:rows], mask[:rows]
    before = graphs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert not [str(w.message) for w in caught if "eagerly" in str(w.message)]
    assert graphs() == before + 1
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert (compiled == eager).float().mean() >= 0.9


@pytest.mark.slow
def test_compiler_failure_falls_back_to_eager_with_one_warning(tmp_path):
    """A C++ compiler that does not exist (inductor's disk cache off, so it must compile): one warning, the same
    tokens as eager decoding; the model is not compiled again in this process."""
    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path)
    ids, mask = left_padded(seed=5)
    eager = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    messages = [str(w.message) for w in caught if "decoding eagerly" in str(w.message)]
    assert len(messages) == 1 and "compiling the decoding step failed" in messages[0]
    assert torch.equal(compiled, eager)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[], compile=True)
    assert [str(w.message) for w in caught if "decoding eagerly" in str(w.message)]
    assert torch.equal(again, eager)


def test_compile_refuses_beam_search_and_no_cache(tmp_path):
    torch.manual_seed(0)
    model = converted(hf_gpt2().eval(), tmp_path)
    ids, mask = left_padded(seed=6)
    with pytest.raises(InputError, match="not beam search"):
        generate(model, ids, mask, max_new_tokens=2, num_beams=2, compile=True)
    with pytest.raises(InputError, match="KV cache"):
        generate(model, ids, mask, max_new_tokens=2, use_cache=False, compile=True)


def test_compile_on_an_encoder_decoder_warns_and_decodes_eagerly(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, max_position_embeddings=64, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None))
    model = converted(hf.eval(), tmp_path)
    ids = torch.randint(4, VOCAB, (2, 5), generator=torch.Generator().manual_seed(7))
    with pytest.warns(UserWarning, match="decoder-only models; decoding eagerly"):
        compiled = generate(model, ids, max_new_tokens=4, compile=True)
    assert torch.equal(compiled, generate(model, ids, max_new_tokens=4))
