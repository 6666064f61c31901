"""The two-tower model: its tables, towers, loss and serving (the package docstring has the maths)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from streamrec.models.embedding_store import EmbeddingStore
from streamrec.models.recommender.sample import Sample
from streamrec.models.recommender.sampling import popularity_negatives
from streamrec.models.recommender.sequence import sequence_encoder
from streamrec.models.recommender.serialisation import recommender_state, restore_recommender
from streamrec.models.recommender.trend import TrendPrior
from streamrec.models.replay_buffer import ReservoirBuffer
from streamrec.models.vocabulary import FALLBACK_ROW, Vocabulary


@dataclass(frozen=True)
class RecommenderConfig:
    dim: int = 64
    content_dim: int = 384
    history_length: int = 20
    user_init_std: float = 0.0  # a new user starts at zero: noise would only blur what the trend prior ranks
    history_half_life: float = 8.0  # in positions: the newest item weighs 1, 8 items back 1/2
    sequence: str = "pooled"  # the user tower's order term: see models/recommender/sequence.py
    trend_half_life_s: float | None = 7 * 86_400.0  # the trend prior (models/recommender/trend.py); None: off
    lr_embeddings: float = 0.05
    lr_dense: float = 1e-3
    num_negatives: int = 128
    popularity_exponent: float = 0.75
    event_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "purchase": 3.0})
    replay_fraction: float = 0.5  # replayed samples per real sample in each step
    replay_capacity: int = 50_000
    user_min_count: int = 1
    item_min_count: int = 1
    ttl_s: float | None = None
    seed: int = 0
    device: str = "cpu"


class Recommender:
    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = c = config or RecommenderConfig()
        torch.manual_seed(c.seed)
        self.device = torch.device(c.device)
        self.users = Vocabulary(min_count=c.user_min_count, ttl_s=c.ttl_s)
        self.items = Vocabulary(min_count=c.item_min_count, ttl_s=c.ttl_s)
        self.user_emb = EmbeddingStore(
            c.dim, lr=c.lr_embeddings, init_std=c.user_init_std, device=self.device, seed=c.seed
        )
        self.item_emb = EmbeddingStore(c.dim, lr=c.lr_embeddings, device=self.device, seed=c.seed + 1)
        self.item_bias = EmbeddingStore(1, lr=c.lr_embeddings, init_std=0.0, device=self.device, seed=c.seed + 2)
        self.content = torch.zeros(self.item_emb.capacity, c.content_dim, device=self.device)
        self.popularity = torch.zeros(self.item_emb.capacity, device=self.device)
        self.trend = TrendPrior(c.trend_half_life_s or 1.0, capacity=self.item_emb.capacity, device=self.device)
        self.trend_weight = nn.Parameter(torch.zeros((), device=self.device))  # γ: learned, 0 at first
        self.content_proj = nn.Linear(c.content_dim, c.dim, bias=False).to(self.device)
        nn.init.zeros_(self.content_proj.weight)
        self.history_proj = nn.Linear(c.dim, c.dim).to(self.device)
        with torch.no_grad():
            self.history_proj.weight.copy_(torch.eye(c.dim))
            self.history_proj.bias.zero_()
        self.sequence = sequence_encoder(c.sequence, c.dim, c.history_length).to(self.device)
        self.dense_optimizer = torch.optim.Adam(
            [
                *self.content_proj.parameters(),
                *self.history_proj.parameters(),
                *self.sequence.parameters(),
                *([self.trend_weight] if c.trend_half_life_s is not None else []),
            ],
            lr=c.lr_dense,
        )
        self.replay: ReservoirBuffer[Sample] = ReservoirBuffer(c.replay_capacity, seed=c.seed)
        self.version = 0
        self.samples_trained = 0  # real samples only
        self.augmented_trained: Counter[str] = Counter()  # augmented samples trained on, by kind
        self.augmented_dropped: Counter[str] = Counter()  # augmented samples on an item without a row
        self._content_version = 0  # bumped whenever content rows or the assigned items change
        self._content_cache: tuple[int, list[str], torch.Tensor] | None = None
        self._generator = torch.Generator(device="cpu").manual_seed(c.seed)
        self._touched_users: set[str] = set()
        self._touched_items: set[str] = set()

    # --- vocabulary and tables -------------------------------------------------------------------
    def _register(self, samples: Sequence[Sample]) -> None:
        """Count sightings of real samples' ids; initialise rows handed out fresh."""
        fresh_users, fresh_items, fresh_item_ids = [], [], []
        for s in samples:
            if not s.is_real:
                continue
            u = self.users.lookup(s.user_id, s.ts_s)
            i = self.items.lookup(s.item_id, s.ts_s)
            if u.fresh:
                fresh_users.append(u.row)
            if i.fresh:
                fresh_items.append(i.row)
                fresh_item_ids.append(s.item_id)
        self._grow()
        self.user_emb.reset_rows(fresh_users)
        self._reset_item_rows(fresh_items, fresh_item_ids)
        if fresh_items:
            index = torch.tensor(fresh_items, device=self.device)
            self.popularity[index] = 0.0
            self.trend.reset(index)
            self.content[index] = 0.0
            self._content_version += 1

    def _grow(self) -> None:
        self.user_emb.ensure_rows(self.users.num_rows)
        self.item_emb.ensure_rows(self.items.num_rows)
        self.item_bias.ensure_rows(self.items.num_rows)
        extra = self.item_emb.capacity - self.content.shape[0]
        if extra > 0:
            self.content = torch.cat([self.content, torch.zeros(extra, self.config.content_dim, device=self.device)])
            self.popularity = torch.cat([self.popularity, torch.zeros(extra, device=self.device)])
        self.trend.ensure(self.item_emb.capacity)

    def _reset_item_rows(self, rows: list[int], item_ids: list[str]) -> None:
        """New item rows start from their id (:meth:`initial_item_parameters`), the same on every worker."""
        self.item_emb.reset_rows_for(rows, item_ids, self.config.seed)
        self.item_bias.reset_rows(rows)

    # --- item-side parameters shared between workers (models/parameter_sync.py) ------------------
    def initial_item_parameters(self, item_id: str) -> torch.Tensor:
        """``[dim + 1]``: the id embedding and bias a new row for ``item_id`` starts at (a function of the id)."""
        return torch.cat([self.item_emb.initial_row(item_id, self.config.seed), torch.zeros(1)])

    def item_parameters(self, item_ids: Sequence[str]) -> torch.Tensor:
        """``[n, dim + 1]`` on the CPU: each item's id embedding and bias (items without a row: the fallback)."""
        rows = torch.tensor([self.items.row(i) for i in item_ids], dtype=torch.long, device=self.device)
        return torch.cat([self.item_emb.lookup(rows), self.item_bias.lookup(rows)], dim=1).cpu()

    def add_item_parameters(self, item_ids: Sequence[str], deltas: torch.Tensor, now_s: float) -> None:
        """Add ``deltas[n]`` (``[n, dim + 1]``) to each item's id embedding and bias; unknown items get a row.

        Another worker's training, not a sighting: popularity, replay and sample counts are untouched.
        """
        fresh_rows, fresh_ids = [], []
        for item_id in dict.fromkeys(item_ids):
            lookup = self.items.assign(item_id, now_s)
            if lookup.fresh:
                fresh_rows.append(lookup.row)
                fresh_ids.append(item_id)
        self._grow()
        if fresh_rows:
            self._reset_item_rows(fresh_rows, fresh_ids)
            index = torch.tensor(fresh_rows, device=self.device)
            self.popularity[index] = 0.0
            self.content[index] = 0.0
            self._content_version += 1
        rows = torch.tensor([self.items.row(i) for i in item_ids], dtype=torch.long, device=self.device)
        deltas = deltas.to(self.device, torch.float32)
        with torch.no_grad():  # index_add_: an item twice in one merge gets both deltas
            self.item_emb.weight.index_add_(0, rows, deltas[:, :-1])
            self.item_bias.weight.index_add_(0, rows, deltas[:, -1:])

    def set_content(self, item_id: str, vector: torch.Tensor, now_s: float = 0.0) -> None:
        """Give an item its content vector (e.g. a text embedding), and a row if it has none.

        Not a sighting: nobody chose the item. Its row lets the content tower score it before its
        first interaction (a cold item), and its counts start at 0.
        """
        lookup = self.items.assign(item_id, now_s)
        self._grow()
        if lookup.fresh:
            self._reset_item_rows([lookup.row], [item_id])
        if lookup.row != FALLBACK_ROW:
            self.content[lookup.row] = vector.to(self.device, torch.float32)
        self._content_version += 1

    def has_content(self, item_id: str) -> bool:
        """Whether the item has a row of its own and a content vector that is not all zeros."""
        row = self.items.row(item_id)
        return row != FALLBACK_ROW and bool(self.content[row].any())

    def item_content_matrix(self) -> tuple[list[str], torch.Tensor]:
        """``(item_ids, content[len(item_ids), content_dim])`` of every assigned item, on the CPU.

        Items without content have a zero row; augmentation skips them.
        """
        item_ids, rows = self.items.assigned()
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        return item_ids, self.content[index].cpu()

    def content_neighbours(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` items whose content vectors are closest (cosine) to ``item_id``'s, best first.

        Items with an all-zero content vector are never neighbours, and an item without content
        (or without a row) has none: similarity to "nothing known" means nothing. The normalised
        matrix is cached until content or the set of assigned items changes, so the
        content-neighbour operator can call this for every event.
        """
        if k <= 0 or not self.has_content(item_id):
            return []
        item_ids, unit = self._unit_content()
        position = {item: n for n, item in enumerate(item_ids)}
        target = position.get(item_id)
        if target is None:
            return []
        similarity = unit @ unit[target]
        similarity[target] = -math.inf  # never its own neighbour
        top = torch.topk(similarity, min(k, len(item_ids) - 1))
        return [(item_ids[n], float(v)) for v, n in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def _unit_content(self) -> tuple[list[str], torch.Tensor]:
        """Assigned items with content and their L2-normalised content vectors (cached)."""
        if self._content_cache is None or self._content_cache[0] != self._content_version:
            item_ids, content = self.item_content_matrix()
            has = content.abs().sum(dim=1) > 0
            keep = has.nonzero().flatten().tolist()
            unit = torch.nn.functional.normalize(content[has], dim=1)
            self._content_cache = (self._content_version, [item_ids[n] for n in keep], unit)
        return self._content_cache[1], self._content_cache[2]

    # --- towers ----------------------------------------------------------------------------------
    def _history_rows(self, histories: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``[B, L]`` item rows (newest last) and recency weights (0 where padded).

        Built as one flat list and one tensor: a tensor per row costs more than the step's maths.
        """
        length = self.config.history_length
        row_of = self.items.row
        flat: list[int] = []
        lengths: list[int] = []
        for history in histories:
            recent = history[-length:] if len(history) > length else history
            flat.extend([FALLBACK_ROW] * (length - len(recent)))
            flat.extend(row_of(item) for item in recent)
            lengths.append(len(recent))
        rows = torch.tensor(flat, dtype=torch.long).view(len(histories), length)
        decay = 0.5 ** (torch.arange(length - 1, -1, -1, dtype=torch.float32) / self.config.history_half_life)
        filled = torch.arange(length).unsqueeze(0) >= (length - torch.tensor(lengths)).unsqueeze(1)
        weights = decay.unsqueeze(0) * filled
        return rows.to(self.device), weights.to(self.device)

    def _item_vectors(self, rows: torch.Tensor, id_vectors: torch.Tensor) -> torch.Tensor:
        return id_vectors + self.content_proj(self.content[rows])

    def _item_offsets(self, rows: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """Each item's score offset: its learned bias plus the trend prior ``γ · log(floor + m(t))``."""
        if self.config.trend_half_life_s is None:
            return biases
        return biases + self.trend_weight * self.trend.feature(rows)

    def _user_vectors(self, user_vectors: torch.Tensor, hist_vectors: torch.Tensor, hist_weights: torch.Tensor):
        total = hist_weights.sum(dim=1, keepdim=True).clamp_min(1e-6)
        pooled = (hist_vectors * hist_weights.unsqueeze(-1)).sum(dim=1) / total
        has_history = (hist_weights.sum(dim=1, keepdim=True) > 0).float()
        return user_vectors + has_history * self.history_proj(pooled) + self.sequence(hist_vectors, hist_weights)

    # --- training --------------------------------------------------------------------------------
    def set_lr_multiplier(self, factor: float) -> None:
        """Scale the learning rates (the drift monitor's reaction); 1.0 restores the configured ones."""
        c = self.config
        for store in (self.user_emb, self.item_emb, self.item_bias):
            store.lr = c.lr_embeddings * factor
        for group in self.dense_optimizer.param_groups:
            group["lr"] = c.lr_dense * factor

    def sample_weight(self, event_type: str) -> float:
        return self.config.event_weights.get(event_type, 1.0)

    def learn_many(self, samples: Sequence[Sample]) -> float:
        """One optimisation step on ``samples`` plus replayed past samples; returns the mean loss.

        ``samples`` may mix real and augmented samples (see the module docstring for how they
        differ); replay draws ``replay_fraction`` past real samples per real sample.
        """
        if not samples:
            return 0.0
        c = self.config
        self._register(samples)
        real = [s for s in samples if s.is_real]
        augmented = []
        for s in samples:
            if s.is_real:
                continue
            if self.items.row(s.item_id) == FALLBACK_ROW:
                self.augmented_dropped[s.kind] += 1
            else:
                augmented.append(s)
        replayed = self.replay.sample(round(len(real) * c.replay_fraction))
        self.replay.extend(real)
        batch = [*real, *augmented, *replayed]
        if not batch:
            return 0.0

        user_rows = torch.tensor([self.users.row(s.user_id) for s in batch], device=self.device)
        pos_rows = torch.tensor([self.items.row(s.item_id) for s in batch], device=self.device)
        weights = torch.tensor([s.weight for s in batch], device=self.device)
        labels = torch.tensor([s.label for s in batch], dtype=torch.float32, device=self.device)
        hist_rows, hist_weights = self._history_rows([s.history for s in batch])
        neg_rows, log_q = self._negatives(c.num_negatives)

        u_rows, u_leaf, u_inv = self.user_emb.gather(user_rows)
        all_item_rows = torch.cat([pos_rows, neg_rows, hist_rows.flatten()])
        i_rows, i_leaf, i_inv = self.item_emb.gather(all_item_rows)
        b_rows, b_leaf, b_inv = self.item_bias.gather(torch.cat([pos_rows, neg_rows]))

        item_vectors = self._item_vectors(all_item_rows, i_leaf[i_inv])
        n_pos, n_neg = len(batch), len(neg_rows)
        pos_vec, neg_vec = item_vectors[:n_pos], item_vectors[n_pos : n_pos + n_neg]
        hist_vec = item_vectors[n_pos + n_neg :].view(n_pos, c.history_length, c.dim)
        users = self._user_vectors(u_leaf[u_inv], hist_vec, hist_weights)
        bias = self._item_offsets(torch.cat([pos_rows, neg_rows]), b_leaf[b_inv].squeeze(-1))

        score = (users * pos_vec).sum(-1) + bias[:n_pos]  # the model's score of each sample's item
        pos_logit = score - log_q[pos_rows]
        neg_logit = users @ neg_vec.T + bias[n_pos:] - log_q[neg_rows]
        neg_logit = neg_logit.masked_fill(neg_rows.unsqueeze(0) == pos_rows.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1)
        softmax_loss = -torch.log_softmax(logits, dim=1)[:, 0]
        # label 1: sampled softmax; label 0: -log(1 - sigmoid(score)) = softplus(score), no logQ
        # correction (the item was named, not sampled). A soft label mixes the two.
        loss_per_sample = labels * softmax_loss + (1.0 - labels) * torch.nn.functional.softplus(score)
        loss = (loss_per_sample * weights).sum() / weights.sum().clamp_min(1e-12)

        self.dense_optimizer.zero_grad()
        loss.backward()
        self.user_emb.apply_gradients(u_rows, u_leaf.grad)
        self.item_emb.apply_gradients(i_rows, i_leaf.grad)
        self.item_bias.apply_gradients(b_rows, b_leaf.grad)
        self.dense_optimizer.step()

        real_rows = pos_rows[: len(real)]
        self.popularity.index_add_(0, real_rows, torch.ones_like(real_rows, dtype=torch.float32))
        self.trend.learn(real_rows, torch.tensor([s.ts_s for s in real], dtype=torch.float64))
        self.samples_trained += len(real)
        self.augmented_trained.update(s.kind for s in augmented)
        self.version += 1
        self._note_touched(batch, i_rows)
        return float(loss.detach())

    def _note_touched(self, batch: Sequence[Sample], item_rows: torch.Tensor) -> None:
        """Remember whose parameters this step moved, for :meth:`take_touched`."""
        self._touched_users.update(s.user_id for s in batch if s.user_id in self.users)
        key_of = self.items.key_of
        self._touched_items.update(key for key in map(key_of, item_rows.tolist()) if key is not None)

    def take_touched(self) -> tuple[set[str], set[str]]:
        """Users and items whose parameters changed since the last call (then forgets them).

        A user's published vector also depends on its history's item vectors; users are refreshed
        when they act (or in a snapshot), not whenever one of their items moves.
        """
        users, items = self._touched_users, self._touched_items
        self._touched_users, self._touched_items = set(), set()
        return users, items

    def expire(self, now_s: float) -> tuple[list[str], list[str]]:
        """Forget users and items idle for ``ttl_s`` of event time; their rows are reused later."""
        users = [key for key, _ in self.users.expire(now_s)]
        items = [key for key, _ in self.items.expire(now_s)]
        if items:
            self._content_version += 1
        self._touched_users.difference_update(users)
        self._touched_items.difference_update(items)
        return users, items

    def _negatives(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows drawn ∝ popularity^α among assigned items, and log Q(row) for every row."""
        _, assigned = self.items.assigned()  # assigned rows are never the fallback row
        return popularity_negatives(
            self.popularity[: self.items.num_rows], assigned, n, self.config.popularity_exponent,
            self.item_emb.capacity, self._generator,
        )  # fmt: skip

    # --- checkpoints (models/recommender/serialisation.py) ------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        return recommender_state(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | None = None) -> Recommender:
        config = dict(state["config"])
        if device is not None:
            config["device"] = device
        return restore_recommender(cls(RecommenderConfig(**config)), state)

    # --- scoring ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_batch(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
        """Scores of every known item for each user: ``(item_ids, scores[len(users), len(item_ids)])``.

        Item vectors are computed once for the whole batch: scoring happens before the batch is
        trained on, so they are the same for every event in it.
        """
        item_ids, item_rows = self.items.assigned()
        return item_ids, self._score_rows(users, histories, item_rows)

    @torch.inference_mode()
    def score_candidates(
        self, users: Sequence[str], histories: Sequence[Sequence[str]], item_ids: Sequence[str]
    ) -> torch.Tensor:
        """``scores[len(users), len(item_ids)]`` on the CPU, for any items, known or not.

        An item without a row of its own scores as the fallback row does: what the model can say
        of an item it has never trained on (all such items tie; evaluation breaks ties at random).
        """
        row_of = self.items.row
        return self._score_rows(users, histories, [row_of(item) for item in item_ids])

    def _score_rows(
        self, users: Sequence[str], histories: Sequence[Sequence[str]], item_rows: list[int]
    ) -> torch.Tensor:
        """``user · item + offset`` for every user and item row, one matrix product, on the CPU."""
        if not users or not item_rows:
            return torch.zeros(len(users), len(item_rows))
        rows = torch.tensor(item_rows, dtype=torch.long, device=self.device)
        items = self._item_vectors(rows, self.item_emb.lookup(rows))
        users_vec = self.user_vectors(users, histories).to(self.device)
        return (users_vec @ items.T + self._item_offsets(rows, self.item_bias.lookup(rows).squeeze(-1))).cpu()

    @torch.inference_mode()
    def item_vectors(self, item_ids: Sequence[str]) -> torch.Tensor:
        """The item tower's output, as scored and as published to the embeddings topic."""
        rows = torch.tensor([self.items.row(i) for i in item_ids], dtype=torch.long, device=self.device)
        return self._item_vectors(rows, self.item_emb.lookup(rows)).cpu()

    @torch.inference_mode()
    def user_vectors(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """The user tower's output for users with these histories (scores are ``user · item + bias``)."""
        c = self.config
        hist_rows, hist_weights = self._history_rows(histories)
        flat = hist_rows.flatten()
        hist_vec = self._item_vectors(flat, self.item_emb.lookup(flat)).view(len(user_ids), c.history_length, c.dim)
        rows = torch.tensor([self.users.row(u) for u in user_ids], dtype=torch.long, device=self.device)
        return self._user_vectors(self.user_emb.lookup(rows), hist_vec, hist_weights).cpu()

    @torch.inference_mode()
    def item_embeddings(self, item_ids: Sequence[str]) -> torch.Tensor:
        """Published item vectors: the item tower's output plus the item bias as a last component.

        Paired with :meth:`user_embeddings` (whose last component is 1), ``user · item`` is exactly
        the model's score, so a consumer can serve from the topic with any inner-product index.
        """
        rows = torch.tensor([self.items.row(i) for i in item_ids], dtype=torch.long, device=self.device)
        vectors = self._item_vectors(rows, self.item_emb.lookup(rows))
        offsets = self._item_offsets(rows, self.item_bias.lookup(rows).squeeze(-1))
        return torch.cat([vectors, offsets.unsqueeze(1)], dim=1).cpu()

    @torch.inference_mode()
    def user_embeddings(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Published user vectors: the user tower's output and a constant 1 (see :meth:`item_embeddings`)."""
        vectors = self.user_vectors(user_ids, histories)
        return torch.cat([vectors, torch.ones(len(user_ids), 1)], dim=1)

    @torch.inference_mode()
    def similar(self, item_id: str, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` items whose tower vectors have the highest cosine similarity to ``item_id``'s."""
        if item_id not in self.items:
            raise KeyError(item_id)
        item_ids, item_rows = self.items.assigned()
        rows = torch.tensor(item_rows, dtype=torch.long, device=self.device)
        vectors = torch.nn.functional.normalize(self._item_vectors(rows, self.item_emb.lookup(rows)), dim=1)
        target = vectors[item_ids.index(item_id)]
        similarity = (vectors @ target).cpu()
        order = torch.argsort(similarity, descending=True).tolist()
        return [(item_ids[i], float(similarity[i])) for i in order if item_ids[i] != item_id][:k]

    def item_popularity(self) -> tuple[list[str], torch.Tensor]:
        """``(item_ids, counts)``: real interactions of every assigned item, on the CPU.

        The one place popularity is read from the model: the negative sampler draws from the same
        counts, and augmentation's popularity-aware negatives read them here.
        """
        item_ids, rows = self.items.assigned()
        return item_ids, self.popularity[torch.tensor(rows, dtype=torch.long, device=self.device)].cpu()

    def item_count(self, item_id: str) -> int:
        """Real interactions of one item (0 for an item without a row of its own)."""
        return int(self.popularity[self.items.row(item_id)]) if item_id in self.items else 0

    def memory_report(self) -> dict[str, Any]:
        """Rows per vocabulary and bytes held by the tables (what bounds memory as ids come and go)."""
        tables = {"user_emb": self.user_emb, "item_emb": self.item_emb, "item_bias": self.item_bias}
        extra = (self.content.numel() + self.popularity.numel()) * self.content.element_size()
        return {
            "users": asdict(self.users.report()),
            "items": asdict(self.items.report()),
            "table_bytes": {name: store.memory_bytes() for name, store in tables.items()} | {"item_content": extra},
            "replay_samples": len(self.replay),
        }

    def score_items(self, user_id: str, history: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """Scores of every known item for one user: ``(item_ids, scores)`` in the same order."""
        item_ids, scores = self.score_batch([user_id], [history])
        return item_ids, scores[0] if len(item_ids) else torch.zeros(0)

    def recommend(self, user_id: str, history: Sequence[str], k: int = 20, exclude: set[str] | None = None):
        item_ids, scores = self.score_items(user_id, history)
        exclude = set(history) if exclude is None else exclude
        order = torch.argsort(scores, descending=True).tolist()
        picked = [(item_ids[i], float(scores[i])) for i in order if item_ids[i] not in exclude]
        return picked[:k]
