"""Attention with dropout on the attention weights, written out for the CPU (SDPA's CPU kernels have none).

`attention_with_dropout` is what `F.scaled_dot_product_attention(..., dropout_p=p)` computes, in
distribution, with the cheaper masks of `nn.dropout`: matrix products, one softmax and the mask.

Causal self-attention without another mask (a decoder's training step) goes by blocks of CAUSAL_BLOCK
queries, each scoring only the keys up to its own last query (at T = 256, 10/16 of the T x T work), through
`CausalBlocks`, an autograd function with its own backward: it writes each block's query gradient in
place and adds the key and value gradients of a block into the rows it read, where autograd would give each
slice of the keys a zero-filled gradient of the full length and sum them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dropout import cheap_mask, keep_mask

CAUSAL_BLOCK = 64  # queries a block (measured at T=256, D=64: 64 beats 32 and 128)


def attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
                           mask: torch.Tensor | None = None, is_causal: bool = False,
                           scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) with dropout `p` on the weights, times v: what
    `F.scaled_dot_product_attention(q, k, v, mask, p, is_causal, scale, enable_gqa=True)` computes, in
    distribution. q: (B, H, T, D); k, v: (B, Hkv, S, D) with H a multiple of Hkv; mask: bool (True: may
    attend) or additive float, broadcastable to (B, H, T, S); is_causal needs T == S (no cache).
    Returns (B, H, T, D)."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key/value head serves H / Hkv query heads
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))  # (B, H, S, D)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    (batch, heads, length, width), keys = q.shape, k.shape[-2]
    if is_causal and mask is None and cheap_mask(q.device, p):
        flat = [t.reshape(batch * heads, length, width) for t in (q, k, v)]  # (BH, T, D) each
        return CausalBlocks.apply(*flat, p, scale).view(batch, heads, length, width)
    if is_causal:  # query t sees keys 0..t: -inf above the diagonal, added in the product
        future = future_bias(0, length, keys, q)  # (T, S)
        scores = torch.baddbmm(future.expand(batch * heads, length, keys), q.reshape(-1, length, width),
                               k.reshape(-1, keys, width).transpose(1, 2), alpha=scale).view(batch, heads, length, keys)
    else:
        scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (B, H, T, S)
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask  # may broadcast to more rows than the scores have
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if mask is not None:  # a query that may see no key gets zeros, as from SDPA (not NaN)
        weights = torch.nan_to_num(weights, nan=0.0)
    if not cheap_mask(q.device, p):
        return torch.matmul(F.dropout(weights, p), v)
    kept = weights.mul(keep_mask(weights.shape, p, weights.dtype))  # unscaled: the scale goes on the smaller output
    return torch.matmul(kept, v).mul_(1.0 / (1.0 - p))  # (B, H, T, D)


def future_bias(first: int, queries: int, keys: int, like: torch.Tensor) -> torch.Tensor:
    """(queries, keys) additive causal bias for queries first..first+queries-1 over keys 0..keys-1: -inf where
    the key comes after the query, 0 elsewhere; in `like`'s dtype and device."""
    return torch.full((queries, keys), float("-inf"), dtype=like.dtype, device=like.device).triu_(first + 1)


def causal_blocks(length: int) -> list[tuple[int, int]]:
    """(start, end) of each block of queries: CAUSAL_BLOCK rows, the last one shorter."""
    return [(start, min(start + CAUSAL_BLOCK, length)) for start in range(0, length, CAUSAL_BLOCK)]


class CausalBlocks(torch.autograd.Function):
    """Causal attention with dropout p (0 < p, a CPU mask from `keep_mask`) by blocks of queries.
    q, k, v: (N, T, D) contiguous, N = batch x heads. Returns (N, T, D).

    Each block keeps its softmax weights and its kept weights (weights x mask, unscaled) for the backward, which
    then needs no mask: with G the gradient of the kept weights, the scores' gradient is
    kept * G - weights * rowsum(kept * G) (softmax's backward through the mask, whose zeros are kept's).
    The backward goes from the last block, which reads every key, so its products start the key and value
    gradients and the earlier blocks add into the rows they read."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, scale: float) -> torch.Tensor:
        count, length, _ = q.shape
        out = torch.empty_like(q)  # (N, T, D)
        probabilities, kept = [], []
        for start, end in causal_blocks(length):
            future = future_bias(start, end - start, end, q)  # (rows, end)
            scores = torch.baddbmm(future.expand(count, -1, -1), q[:, start:end], k[:, :end].transpose(1, 2),
                                   alpha=scale)  # (N, rows, end)
            weights = torch.softmax(scores, dim=-1)
            dropped = weights * keep_mask(weights.shape, p, weights.dtype)  # the kept weights, unscaled
            torch.bmm(dropped, v[:, :end], out=out[:, start:end])  # (N, rows, D)
            probabilities.append(weights)
            kept.append(dropped)
        ctx.save_for_backward(q, k, v, *probabilities, *kept)
        ctx.scale, ctx.kept_scale = scale, 1.0 / (1.0 - p)
        return out.mul_(ctx.kept_scale)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, *saved = ctx.saved_tensors
        blocks = causal_blocks(q.shape[1])
        probabilities, kept = saved[:len(blocks)], saved[len(blocks):]
        grad_out = grad_out.mul(ctx.kept_scale)  # (N, T, D), dropout's scale of the kept weights
        grad_q, grad_k, grad_v = torch.empty_like(q), None, None
        for (start, end), weights, dropped in reversed(list(zip(blocks, probabilities, kept))):
            rows_grad, rows_q = grad_out[:, start:end], q[:, start:end]  # (N, rows, D)
            grad_scores = torch.bmm(rows_grad, v[:, :end].transpose(1, 2)).mul_(dropped)  # (N, rows, end)
            grad_scores.addcmul_(weights, grad_scores.sum(-1, keepdim=True), value=-1)
            if grad_v is None:  # the last block: every key, (N, T, D)
                grad_v = torch.bmm(dropped.transpose(1, 2), rows_grad)
                grad_k = torch.bmm(grad_scores.transpose(1, 2), rows_q).mul_(ctx.scale)
            else:
                grad_v[:, :end].baddbmm_(dropped.transpose(1, 2), rows_grad)
                grad_k[:, :end].baddbmm_(grad_scores.transpose(1, 2), rows_q, alpha=ctx.scale)
            torch.bmm(grad_scores, k[:, :end], out=grad_q[:, start:end]).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None
