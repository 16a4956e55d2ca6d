"""`nn.decoding_linear.DecodingLinear`: an `nn.Linear` whose 1-16-row products without gradients inside a decoding
loop read a copy of its weight (transposed for one row into a wide output, packed for oneDNN for 2-16 rows); every
result equals `F.linear`'s, the copy follows changes to the weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.devices import cpu_has_bf16_units
from lmforge.models.cpu_decoding import decoding_layout, project
from lmforge.nn.decoding_linear import MAX_FAST_ROWS, DecodingCopies, DecodingLinear, decoding_products, is_packed, \
    packing_available


@pytest.mark.parametrize("rows", [1, 2, 7, MAX_FAST_ROWS, MAX_FAST_ROWS + 1, 40])
@pytest.mark.parametrize("out_features,in_features,bias", [(5, 3, True), (96, 64, False), (130, 257, True)])
def test_every_row_count_gives_the_plain_product(rows, out_features, in_features, bias):
    layer = DecodingLinear(in_features, out_features, bias=bias)
    x = torch.randn(2, rows, in_features)
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))  # outside a decoding loop: F.linear
        assert layer._decoding._copies == {}
    with torch.inference_mode(), decoding_products():
        out = layer(x)  # 2 * rows rows
        packed = layer._decoding._copies.get("packed")
        assert (packed is not None and is_packed(packed[1])) == (packing_available() and 2 * rows <= MAX_FAST_ROWS)
        each_alone = torch.cat([layer(x[:, i:i + 1]) for i in range(rows)], dim=1)  # 2 rows each
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, each_alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_features,in_features,bias", [(96, 64, True), (64, 64, False), (32, 64, True)])
def test_one_row_reads_a_transposed_copy_when_the_output_is_at_least_as_wide(out_features, in_features, bias):
    layer = DecodingLinear(in_features, out_features, bias=bias)
    x = torch.randn(1, 1, in_features)
    with torch.inference_mode(), decoding_products():
        out = layer(x)
        layer.weight.mul_(-1)  # an in-place update: the copy is made again
        flipped = layer(x)
    assert ("transposed" in layer._decoding._copies) == (out_features >= in_features)
    with torch.no_grad():
        torch.testing.assert_close(flipped, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        layer.weight.mul_(-1)
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_features,in_features,bias", [(96, 64, True), (64, 64, False), (32, 64, True)])
def test_compiled_one_row_streams_the_matrix_in_generated_code(out_features, in_features, bias, dtype):
    from torch._inductor.utils import run_and_get_code

    from lmforge.nn.decoding_linear import compiled_decoding_products

    layer = DecodingLinear(in_features, out_features, bias=bias).to(dtype)
    x = torch.randn(1, 1, in_features, dtype=dtype)
    torch._dynamo.reset()
    with torch.inference_mode(), compiled_decoding_products():
        out, code = run_and_get_code(torch.compile(layer, dynamic=False), x)
    exact = F.linear(x.double(), layer.weight.double(), None if layer.bias is None else layer.bias.double())
    tolerance = 1e-5 if dtype == torch.float32 else 2**-7  # bf16: the output rounded to 8 bits of mantissa
    torch.testing.assert_close(out.double(), exact, rtol=tolerance, atol=tolerance)
    code = "".join(code)
    assert "mm(" not in code and "_linear_pointwise" not in code  # no BLAS or oneDNN call: a loop over the matrix
    assert ("opaque_copy" in code) == (dtype == torch.bfloat16)


def test_gradients_and_state_dict_are_those_of_nn_linear():
    layer = DecodingLinear(8, 4)
    plain = torch.nn.Linear(8, 4)
    plain.load_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == list(plain.state_dict())
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()  # 3 rows with autograd: the plain product, gradients to the weight
    assert layer.weight.grad is not None and layer._decoding._copies == {}


def test_the_packed_copy_follows_in_place_updates_and_dtype_changes():
    layer = DecodingLinear(16, 8)
    x = torch.randn(4, 16)
    with torch.no_grad(), decoding_products():
        layer(x)
        layer.weight.mul_(2)  # an optimizer step, a merged adapter
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        layer.double()
        assert layer(x.double()).dtype == torch.float64  # the plain product for other dtypes


def test_generation_uses_the_packed_copies_and_keeps_its_tokens():
    import lmforge

    torch.manual_seed(0)
    model = lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(dropout=0.0), "causal-lm").eval()
    prompts = torch.randint(3, 500, (4, 3), generator=torch.Generator().manual_seed(1))
    tokens = model.generate(prompts, max_new_tokens=6, eos_token_id=[])
    layers = [m for m in model.modules() if isinstance(m, DecodingLinear)]
    assert layers and all(("packed" in m._decoding._copies) == packing_available() for m in layers)
    stepwise = prompts
    with torch.no_grad():  # the plain products, one forward per token over the whole sequence
        for _ in range(6):
            stepwise = torch.cat([stepwise, model(stepwise).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, stepwise)


@pytest.mark.parametrize("prompt_length", [2, 5, MAX_FAST_ROWS])
def test_a_prompt_of_a_batch_of_one_is_prefilled_without_packing_the_matrices(prompt_length):
    """Batch-1 decoding reads no packed copy, so a prompt of 2-16 tokens (as many rows) is multiplied by the plain
    matrices: no packed copy of any block matrix stays in memory, and the tokens are the plain products' tokens."""
    import lmforge

    torch.manual_seed(0)
    model = lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(dropout=0.0), "causal-lm").eval()
    prompt = torch.randint(3, 500, (1, prompt_length), generator=torch.Generator().manual_seed(prompt_length))
    tokens = model.generate(prompt, max_new_tokens=5, eos_token_id=[])
    layers = [m for m in model.modules() if isinstance(m, DecodingLinear)]
    assert layers and not any("packed" in m._decoding._copies for m in layers)
    with torch.no_grad():
        stepwise = prompt
        for _ in range(5):
            stepwise = torch.cat([stepwise, model(stepwise).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, stepwise)


@pytest.mark.parametrize("rows", [1, 3, MAX_FAST_ROWS, MAX_FAST_ROWS + 1])
def test_bf16_rows_take_the_packed_copy_where_the_cpu_has_bf16_units(rows):
    """bf16 decoding multiplies 1-16 rows through oneDNN's packed bf16 kernel on a CPU with bf16 units (the plain
    matrix elsewhere): the same product as F.linear in bf16, to bf16 rounding, in the blocks and the LM head."""
    torch.manual_seed(rows)
    layer = DecodingLinear(256, 512, bias=True).bfloat16()
    x = torch.randn(rows, 256).bfloat16()
    packs = cpu_has_bf16_units() and packing_available() and rows <= MAX_FAST_ROWS
    with torch.inference_mode(), decoding_products():
        out = layer(x)
        logits = project(x[None], layer.weight, DecodingCopies().of(layer.weight, "packed") if packs else None)
    assert ("packed" in layer._decoding._copies) == packs
    assert decoding_layout(rows, torch.device("cpu"), torch.bfloat16) == ("packed" if packs else None)
    reference = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(logits[0].float(), reference - layer.bias.float(), rtol=2e-2, atol=2e-2)
