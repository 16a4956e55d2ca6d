"""The CPU dropout masks and attention with dropout (lmforge.nn.dropout) against torch's own kernels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn.attention_dropout import attention_with_dropout
from lmforge.nn.dropout import dropout, dropout_add, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.013])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    mask = keep_mask((301, 1001), p)  # odd sizes: a word's second half is cut off at the end
    assert mask.shape == (301, 1001) and mask.dtype == torch.bool
    n = mask.numel()
    tolerance = 5 * math.sqrt(p * (1 - p) / (n / 2))  # 5 sigma for each half of the words
    flat = mask.view(-1)
    for part in (flat[0::2], flat[1::2]):  # the lower and the upper 16 bits of the words
        assert abs(part.float().mean().item() - (1 - p)) < tolerance
    # neighbours are independent: P(both kept) = (1-p)^2
    both = (flat[:-1] & flat[1:]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.01


def test_keep_mask_follows_the_seed():
    torch.manual_seed(3)
    first = keep_mask((64, 64), 0.2)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((64, 64), 0.2))
    assert not torch.equal(first, keep_mask((64, 64), 0.2))


def test_dropout_scales_kept_values_and_routes_gradients_through_the_mask():
    torch.manual_seed(0)
    x = torch.randn(4, 50, 30, requires_grad=True)
    out = dropout(x, 0.25)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)
    assert 0.65 < kept.float().mean().item() < 0.85
    out.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # torch's own kernel at p = 1


def _sdpa_cases():
    torch.manual_seed(1)
    b, h, t, d = 2, 4, 9, 8
    padding = torch.ones(b, t, dtype=torch.bool)
    padding[0, :3] = False
    bool_mask = padding[:, None, None, :]  # (B, 1, 1, S)
    float_mask = torch.randn(1, h, t, t)  # an additive bias (T5's relative positions)
    return [
        dict(is_causal=True), dict(mask=bool_mask), dict(mask=bool_mask & torch.ones(t, t, dtype=torch.bool).tril()),
        dict(mask=float_mask), dict(is_causal=True, scale=0.3), dict(is_causal=True, kv_heads=2),
    ], (b, h, t, d)


@pytest.mark.parametrize("case", range(6))
def test_attention_with_dropout_is_sdpa_when_nothing_is_dropped(case):
    """With a drop probability too small for the mask to drop anything, the written-out attention must be
    torch's scaled_dot_product_attention, values and gradients."""
    cases, (b, h, t, d) = _sdpa_cases()
    options = dict(cases[case])
    kv_heads = options.pop("kv_heads", h)
    q = torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(b, kv_heads, t, d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = options.get("mask")
    ours = attention_with_dropout(q, k, v, 1e-9, mask, options.get("is_causal", False), options.get("scale"))
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if mask is None or mask.dtype == torch.bool
                                               else mask.double(), is_causal=options.get("is_causal", False),
                                               scale=options.get("scale"), enable_gqa=kv_heads != h)
    assert torch.allclose(ours, reference, atol=1e-10)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-9)


def test_attention_with_dropout_drops_weights_and_keeps_the_expectation():
    """Dropout acts on the attention weights: averaged over many masks the output is the output without dropout."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    draws = torch.stack([attention_with_dropout(q, k, v, 0.3, is_causal=True) for _ in range(4000)])
    assert not torch.allclose(draws[0], reference)
    assert torch.allclose(draws.mean(0), reference, atol=0.06)
    first = draws[:, :, :, 0]  # the first query sees one key: its output is v[0] / 0.7 or 0
    kept = (first.abs() > 1e-12).double().mean().item()
    assert abs(kept - 0.7) < 0.04


@pytest.mark.parametrize("length", [1, 63, 64, 65, 150])
def test_causal_attention_by_blocks_is_sdpa_at_every_length(length):
    """Causal attention goes by blocks of CAUSAL_BLOCK queries (the last one partial): values and gradients are
    SDPA's at lengths below, at and across block boundaries, with grouped-query heads."""
    torch.manual_seed(length)
    q = torch.randn(2, 4, length, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, length, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ours = attention_with_dropout(q, k, v, 1e-9, is_causal=True, scale=0.4)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.4, enable_gqa=True)
    assert torch.allclose(ours, reference, atol=1e-10)
    weights = torch.randn_like(reference)
    grads = torch.autograd.grad((ours * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("length", [1, 63, 64, 65, 150])
def test_causal_blocks_with_drops_are_the_formula_with_the_same_masks(length, monkeypatch):
    """With weights actually dropped, the blocks' values and their own backward are autograd's of
    (softmax(q k^T * scale + causal) * mask) v / (1 - p) with the very masks the blocks drew."""
    from lmforge.nn import attention_dropout

    drawn = []

    def recording_keep_mask(*args, **kwargs):
        drawn.append(keep_mask(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(attention_dropout, "keep_mask", recording_keep_mask)
    torch.manual_seed(length)
    p, scale = 0.3, 0.4
    q, k, v = (torch.randn(2, 3, length, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = attention_with_dropout(q, k, v, p, is_causal=True, scale=scale)  # (2, 3, T, 8)
    full = torch.zeros(6, length, length, dtype=torch.float64)  # each block's mask over the keys it scored
    for (start, end), mask in zip(attention_dropout.causal_blocks(length), drawn, strict=True):
        full[:, start:end, :end] = mask
    if length > 1:
        assert 0 < full.tril().sum() < full.tril().ne(2).sum()  # some weights dropped, some kept
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    scores = (q @ k.transpose(-2, -1) * scale).masked_fill(future, float("-inf"))
    reference = (torch.softmax(scores, -1) * full.view(2, 3, length, length)) @ v / (1 - p)
    assert torch.allclose(ours, reference, atol=1e-10)
    weights = torch.randn_like(reference)
    grads = torch.autograd.grad((ours * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-9)


def test_dropout_add_is_the_residual_plus_dropout_in_value_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(64, 300, requires_grad=True)
    residual = torch.randn(64, 300, requires_grad=True)
    out = dropout_add(x, residual, 0.2)
    added = out - residual
    kept = added != 0
    assert torch.allclose(added[kept], x[kept] / 0.8, atol=1e-6)
    assert 0.77 < kept.float().mean().item() < 0.83
    (out * 3).sum().backward()
    assert torch.allclose(x.grad, 3 * kept.float() / 0.8) and torch.equal(residual.grad, torch.full_like(x, 3.0))
    assert torch.equal(dropout_add(x, residual, 0.2, training=False), residual + x)
    assert torch.equal(dropout_add(x, residual, 0.0), residual + x)

