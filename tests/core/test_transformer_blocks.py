"""nlpexp/models/transformer.py, the Transformer building blocks every wing's own models are made of: attention
against torch's, the causal mask, padded rows."""
import math

import pytest
import torch

from nlpexp.models.transformer import causal_mask, pad_rows, scaled_dot_product_attention


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- attention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "both"])
def test_attention_matches_torch_with_and_without_masks(mask_kind):
    q, k, v = _rand(2, 3, 5, 8, seed=1), _rand(2, 3, 5, 8, seed=2), _rand(2, 3, 5, 6, seed=3)  # d_v != d_k
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)[:, None, None, :]
    mask = {"none": None, "causal": causal_mask(5), "padding": pad, "both": causal_mask(5) & pad}[mask_kind]
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.shape == (2, 3, 5, 6)
    assert torch.allclose(ours, ref, atol=1e-5)
    if mask is not None:  # masked positions get exactly zero weight
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_pad_rows():
    assert pad_rows([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_rows([[1, 2], [3]], 0, left=True).tolist() == [[1, 2], [0, 3]]


# -- the shared Transformer building blocks ---------------------------------------------------------------
def test_attention_matches_torch_and_positional_encoding_formula():
    from nlpexp.models.transformer import (
        CausalLM,
        causal_mask,
        positional_encoding,
        scaled_dot_product_attention,
    )

    q, k, v = (torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    mask = causal_mask(5)
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))
    pe = positional_encoding(101, 500)
    assert pe[100, 0].item() == pytest.approx(math.sin(100)) and pe[1, 1].item() == pytest.approx(math.cos(1))
    assert pe[100, 2].item() == pytest.approx(math.sin(100 / 10000 ** (2 / 500)), abs=1e-5)
    lm = CausalLM(20, d_model=16, num_layers=1, num_heads=2, d_ff=32, max_len=8).eval()
    x = torch.randint(0, 20, (1, 8))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 20
    assert torch.allclose(lm(x)[:, :-1], lm(y)[:, :-1], atol=1e-6)  # no position sees the future
