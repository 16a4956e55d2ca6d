"""lmforge.nn.loss.cross_entropy (the gradient made in the forward pass) against F.cross_entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn.loss import cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ignored", [0, 5])
def test_values_and_gradients_match_torch(dtype, ignored):
    torch.manual_seed(0)
    logits = (torch.randn(37, 301) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 301, (37,), dtype=torch.int32)
    targets[torch.randperm(37)[:ignored]] = -100
    loss = cross_entropy(logits, targets)
    reference = F.cross_entropy(logits.float(), targets.long(), ignore_index=-100)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(loss * 2.5, logits)  # a scaled loss: the backward scales the saved gradient
    (expected,) = torch.autograd.grad(reference * 2.5, logits)
    assert grad.dtype == dtype
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert torch.allclose(grad.float(), expected.float(), atol=tolerance)
    if ignored:
        rows = targets == -100
        assert torch.all(grad[rows] == 0)


def test_extreme_logits_stay_finite_and_no_grad_needs_no_gradient():
    logits = torch.tensor([[200.0, -200.0, 0.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([1, 2])
    with torch.no_grad():
        loss = cross_entropy(logits, targets)
    assert math.isclose(loss.item(), F.cross_entropy(logits, targets).item(), rel_tol=1e-6)
    assert math.isfinite(loss.item())


def test_every_target_ignored_gives_nan_like_torch():
    logits = torch.randn(4, 7, requires_grad=True)
    targets = torch.full((4,), -100)
    loss = cross_entropy(logits, targets)
    assert math.isnan(loss.item())
    assert math.isnan(F.cross_entropy(logits, targets).item())
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # torch's gradient too: zeros, not NaN


@pytest.mark.parametrize("ignored", [0, 3])
def test_plain_backward_and_a_retained_graph_give_torch_gradients(ignored):
    """`loss.backward()` takes the saved gradient as it is: into a leaf's .grad, twice over a retained graph
    (the second time accumulated), and through a product, as F.cross_entropy's."""
    torch.manual_seed(1)
    logits = (torch.randn(19, 53) * 3).requires_grad_()
    targets = torch.randint(0, 53, (19,))
    targets[:ignored] = -100
    reference = logits.detach().clone().requires_grad_()
    loss, expected_loss = cross_entropy(logits, targets), F.cross_entropy(reference, targets)
    for _ in range(2):
        loss.backward(retain_graph=True)
        expected_loss.backward(retain_graph=True)
        assert torch.allclose(logits.grad, reference.grad, atol=1e-7)
    hidden = torch.randn(19, 8, requires_grad=True)
    matrix = torch.randn(53, 8)
    twin = hidden.detach().clone().requires_grad_()
    cross_entropy(hidden @ matrix.T, targets).backward()
    F.cross_entropy(twin @ matrix.T, targets).backward()
    assert torch.allclose(hidden.grad, twin.grad, atol=1e-6)
