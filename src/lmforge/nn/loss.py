"""Cross-entropy with its gradient made in the forward pass, from the one log-softmax both need.

`F.cross_entropy` over (N, V) logits makes four passes over an (N, V) tensor besides the log-softmax:
its backward fills a zero (N, V) gradient for the picked log-probabilities, then a log-softmax backward
reads two (N, V) tensors to write a third. Here the log-softmax output is turned into softmax - one_hot
in place (exp, then N single-element updates), which is the gradient of the summed loss; the backward only
scales it. Values and gradients equal `F.cross_entropy(..., ignore_index=...)` to float rounding; the loss
is computed in float32 whatever the logits' dtype, and the gradient is returned in that dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        # logits (N, V), targets (N,)
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (N, V) float32
        scored = targets != ignore_index  # (N,)
        picked = targets.masked_fill(~scored, 0)[:, None]  # (N, 1), a valid index on ignored rows
        count = scored.sum()
        loss = -log_probs.gather(1, picked).squeeze(1).masked_fill(~scored, 0.0).sum() / count
        if ctx.needs_input_grad[0]:
            grad = log_probs.exp_()  # (N, V) softmax, in the log-softmax's memory
            grad.scatter_add_(1, picked, -scored[:, None].to(grad.dtype))  # minus the one-hot of each target
            ignored = (~scored).nonzero().squeeze(1)  # (N_ignored,)
            if ignored.numel():
                grad.index_fill_(0, ignored, 0.0)
            ctx.save_for_backward(grad, count)
            ctx.dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad, count = ctx.saved_tensors
        return grad.mul(grad_loss / count).to(ctx.dtype), None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets over the targets that are not
    `ignore_index` (NaN when every target is ignored, as `F.cross_entropy`); a float32 scalar. A compiled
    graph takes `F.cross_entropy`, which the compiler fuses itself."""
    if torch.compiler.is_compiling():
        return F.cross_entropy(logits.float(), targets.long(), ignore_index=ignore_index)
    return _CrossEntropy.apply(logits, targets.long(), ignore_index)
