"""Negative sampling for the sampled softmax: rows drawn in proportion to ``popularity ** α``, with log Q.

Sampled softmax scores the true item against ``n`` items drawn from a proposal ``Q``. Drawing
in proportion to ``(count + 1) ** α`` (α = 0.75, word2vec's choice) makes the negatives items a
user plausibly saw; subtracting ``log(n · Q(row))`` from each candidate's logit (logQ correction,
Bengio & Senécal 2008; Yi et al. 2019) keeps the estimate unbiased, so a popular item is not
pushed down merely for being drawn often. Only rows assigned to an item are ever drawn: the
shared fallback row and free rows have ``Q = 0``.

>>> import torch
>>> counts = torch.tensor([0.0, 9.0, 0.0, 1.0])  # row 0 is the fallback row
>>> rows, log_q = popularity_negatives(counts, [1, 3], 1000, 1.0, 4, torch.Generator().manual_seed(0))
>>> sorted(set(rows.tolist()))
[1, 3]
>>> round(float(log_q[1].exp() / log_q[3].exp()), 2)  # (9 + 1) / (1 + 1)
5.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from streamrec.models.vocabulary import FALLBACK_ROW


def popularity_negatives(
    counts: torch.Tensor,
    assigned_rows: Sequence[int],
    n: int,
    exponent: float,
    capacity: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows drawn with replacement ∝ ``(counts + 1) ** exponent`` among ``assigned_rows``, and
    ``log(n · Q(row))`` for every row up to ``capacity`` (``log 1e-12`` where Q is 0).

    ``counts`` holds one real-interaction count per row in use; ``generator`` is the model's own
    (CPU) generator, so that a checkpointed model draws the same negatives after a restore.
    """
    device = counts.device
    counts = counts.clone()
    counts[FALLBACK_ROW] = 0.0
    active = torch.zeros_like(counts, dtype=torch.bool)
    if assigned_rows:
        active[torch.tensor(list(assigned_rows), device=device)] = True
    q = torch.where(active, (counts + 1.0) ** exponent, torch.zeros_like(counts))
    q = q / q.sum().clamp_min(1e-12)
    log_q = torch.full((capacity,), math.log(1e-12), device=device)
    log_q[: len(q)] = torch.log(q.clamp_min(1e-12) * n)
    if not assigned_rows:
        return torch.zeros(0, dtype=torch.long, device=device), log_q
    rows = torch.multinomial(q.cpu(), n, replacement=True, generator=generator).to(device)
    return rows, log_q
