"""A growable embedding table trained with sparse (row-wise) Adagrad.

Rows appear as the vocabulary grows (:mod:`streamrec.models.vocabulary`), so the table cannot be a fixed
``nn.Embedding`` with a ``torch.optim`` optimiser whose state has a fixed shape. Instead the table
owns its Adagrad accumulator, grows both by doubling, and updates only the rows a batch touched:
each step costs O(rows touched), not O(table), and rows of idle ids are never decayed.

Usage per step: ``rows, leaf, inverse = store.gather(ids)``, compute a loss from ``leaf[inverse]``,
``backward()``, then ``store.apply_gradients(rows, leaf.grad)``.
"""

from __future__ import annotations

import hashlib

import torch


class EmbeddingStore:
    def __init__(
        self,
        dim: int,
        initial_rows: int = 1024,
        lr: float = 0.05,
        init_std: float = 0.05,
        eps: float = 1e-8,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.lr = lr
        self.init_std = init_std
        self.eps = eps
        self.device = torch.device(device)
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self.weight = self._random_rows(initial_rows)
        self.accumulator = torch.zeros(initial_rows, dim, device=self.device)

    @property
    def capacity(self) -> int:
        return self.weight.shape[0]

    def _random_rows(self, n: int) -> torch.Tensor:
        rows = torch.randn(n, self.dim, generator=self._generator) * self.init_std
        return rows.to(self.device)

    def ensure_rows(self, num_rows: int) -> None:
        """Make room for rows ``0 .. num_rows-1`` (capacity doubles, so growth is amortised O(1))."""
        if num_rows <= self.capacity:
            return
        new_capacity = max(num_rows, 2 * self.capacity)
        extra = new_capacity - self.capacity
        # Zeros: a row is initialised when an id is assigned to it (reset_rows), so growth draws no
        # random numbers and a restored table behaves the same whatever its capacity.
        self.weight = torch.cat([self.weight, torch.zeros(extra, self.dim, device=self.device)])
        self.accumulator = torch.cat([self.accumulator, torch.zeros(extra, self.dim, device=self.device)])

    def reset_rows(self, rows: torch.Tensor | list[int]) -> None:
        """Re-initialise rows handed to new ids (a reused row must not carry its old id's vector)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if index.numel():
            self.weight[index] = self._random_rows(index.numel())
            self.accumulator[index] = 0.0

    def reset_rows_for(self, rows: list[int], keys: list[str], seed: int) -> None:
        """Re-initialise ``rows`` from their ids: ``keys[n]``'s row starts at the same vector on every worker.

        Used for item rows, whose parameters several workers add up (:mod:`streamrec.models.parameter_sync`).
        """
        if not rows:
            return
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.weight[index] = torch.stack([self.initial_row(key, seed) for key in keys]).to(self.device)
        self.accumulator[index] = 0.0

    def initial_row(self, key: str, seed: int) -> torch.Tensor:
        """The vector a row for ``key`` starts at: a function of the id and the seed only."""
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        generator = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return torch.randn(self.dim, generator=generator) * self.init_std

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """Vectors for ``rows`` without gradient (for scoring and publishing)."""
        return self.weight[rows]

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(unique_rows, leaf, inverse)``: ``leaf`` holds each touched row once and records
        gradients (so repeated rows sum their gradients); ``leaf[inverse]`` is one vector per input.
        """
        unique, inverse = torch.unique(rows, return_inverse=True)
        leaf = self.weight[unique].clone().requires_grad_(True)
        return unique, leaf, inverse

    def apply_gradients(self, rows: torch.Tensor, grad: torch.Tensor | None) -> None:
        """Row-wise Adagrad: ``G += g²``, ``w -= lr · g / (√G + eps)`` on ``rows`` only."""
        if grad is None:
            return
        with torch.no_grad():
            self.accumulator[rows] += grad * grad
            self.weight[rows] -= self.lr * grad / (self.accumulator[rows].sqrt() + self.eps)

    def memory_bytes(self) -> int:
        return (self.weight.numel() + self.accumulator.numel()) * self.weight.element_size()

    def state_dict(self, num_rows: int) -> dict[str, torch.Tensor]:
        """The first ``num_rows`` rows, their Adagrad state, and the generator that initialises new rows."""
        return {
            "weight": self.weight[:num_rows].clone(),
            "accumulator": self.accumulator[:num_rows].clone(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        rows = state["weight"].shape[0]
        self.ensure_rows(rows)
        self.weight[:rows] = state["weight"].to(self.device)
        self.accumulator[:rows] = state["accumulator"].to(self.device)
        self._generator.set_state(state["generator"])
