"""What the user tower reads from the order of a user's recent items.

The user tower is ``u = e_user + P(pooled) + S(sequence)``. ``P(pooled)`` is the projection of the
recency-weighted mean of the history's item vectors: it knows *which* items a user chose, and
weighs recent ones more, but cannot say what tends to come *after* the last few. ``S`` is one of
the encoders below, chosen by ``RecommenderConfig.sequence``; each reads the history ``h_1 .. h_L``
(oldest first, left-padded) and adds a vector. Every encoder's output layer starts at zero, so a
new model scores exactly as the pooled model does and learns the order term from the stream,
online, with the other dense parameters (Adam).

* ``"pooled"``: no order term (``S = 0``).
* ``"transition"``: a learned transition from each of the last ``k`` items,
  ``S = Σ_{p < k} W_p h_{L-p}`` (a factorised Markov chain of order ``k``, as in FPMC and Caser's
  horizontal filters, reduced to one linear map per position). Cheapest: ``k`` matrix products.
* ``"attention"``: one SASRec-style self-attention block. Positions get learned embeddings; the
  newest item queries every earlier one (causal by construction: only the newest position is
  read out), followed by a position-wise feed-forward layer, each with a residual connection and
  layer norm; ``S`` is a projection of the newest position's output.
* ``"gru"``: a GRU over the history (GRU4Rec's encoder); ``S`` is a projection of its last state.

>>> import torch
>>> history = torch.randn(2, 5, 8)
>>> weights = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])  # first row: 2 pads
>>> [tuple(sequence_encoder(kind, dim=8, length=5)(history, weights).shape) for kind in SEQUENCE_ENCODERS]
[(2, 8), (2, 8), (2, 8), (2, 8)]
>>> float(sequence_encoder("attention", dim=8, length=5)(history, weights).detach().abs().sum())  # starts at zero
0.0
"""

from __future__ import annotations

import torch
from torch import nn

SEQUENCE_ENCODERS = ("pooled", "transition", "attention", "gru")


class NoOrder(nn.Module):
    """``S = 0``: the pooled model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, history: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return history.new_zeros(history.shape[0], self.dim)


class RecentTransitions(nn.Module):
    """One linear map per recent position: what follows the last, second-last, ... item."""

    def __init__(self, dim: int, recent: int = 3) -> None:
        super().__init__()
        self.recent = recent
        self.maps = nn.Parameter(torch.zeros(recent, dim, dim))

    def forward(self, history: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k = min(self.recent, history.shape[1])
        newest = history[:, -k:].flip(1) * (weights[:, -k:].flip(1) > 0).unsqueeze(-1)  # [B, k, d], newest first
        return torch.einsum("bkd,kde->be", newest, self.maps[:k])


class SelfAttentionBlock(nn.Module):
    """A SASRec block read out at the newest position (which may attend to every earlier one)."""

    def __init__(self, dim: int, length: int, heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.zeros(length, dim))
        nn.init.normal_(self.positions, std=0.02)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_attention = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm_output = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.output.weight)

    def forward(self, history: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x = history + self.positions[-history.shape[1] :]
        padded = weights <= 0
        empty = padded.all(dim=1)
        padded = padded.clone()
        padded[empty, -1] = False  # a user without history attends to one padding row; masked out below
        query = x[:, -1:]
        attended, _ = self.attention(query, x, x, key_padding_mask=padded, need_weights=False)
        y = self.norm_attention(query + attended)
        y = self.norm_output(y + self.feed_forward(y))[:, 0]
        return self.output(y) * (~empty).unsqueeze(-1)


class RecurrentHistory(nn.Module):
    """A GRU over the history, oldest first; padding rows are zeros before the first item."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.output = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.output.weight)

    def forward(self, history: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        filled = (weights > 0).unsqueeze(-1)
        _, last = self.gru(history * filled)
        return self.output(last[0]) * filled.any(dim=1)


def sequence_encoder(kind: str, dim: int, length: int) -> nn.Module:
    """The order term ``S`` named by ``kind`` (one of :data:`SEQUENCE_ENCODERS`)."""
    if kind == "pooled":
        return NoOrder(dim)
    if kind == "transition":
        return RecentTransitions(dim)
    if kind == "attention":
        return SelfAttentionBlock(dim, length)
    if kind == "gru":
        return RecurrentHistory(dim)
    raise ValueError(f"unknown sequence encoder {kind!r}; choose from {', '.join(SEQUENCE_ENCODERS)}")
