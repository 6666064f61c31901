"""The incremental two-tower recommender, trained from micro-batches of stream samples.

* **Item tower**: an id embedding (own row once frequent, see :mod:`streamrec.models.vocabulary`) plus a
  learned projection of the item's content vector. Content is zeros until augmentation fills it;
  the projection starts at zero, so an empty content vector changes nothing.
* **User tower**: a user-id embedding (zero for a new user) plus a projection of the
  recency-weighted mean of the item vectors in the user's recent history (from the Faust
  ``user_state`` table), plus an optional order term over that history (:mod:`.sequence`:
  transitions from the last items, a SASRec-style attention block or a GRU).
* **Score**: dot product plus an item offset: the item's bias and the trend prior
  ``γ · log(floor + decayed count)`` with a learned ``γ`` (:mod:`.trend`), what is popular now,
  which carries users the model knows little about.
* **Loss**: for positive samples (``label`` 1), sampled softmax over the true item and negatives
  drawn in proportion to ``popularity ** popularity_exponent``, with the log-probability of drawing
  each candidate subtracted from its logit (logQ correction), so popular items are not simply
  pushed down for being sampled often. Explicit negatives (``label`` 0: augmentation's
  popularity-aware or LLM pseudo-negatives) add a logistic term ``softplus(score)`` that pushes
  their own score down. Both are averaged with the sample weights (purchases above clicks,
  augmented samples below real ones) in one forward/backward pass.
* **Optimisers**: row-wise Adagrad for the embedding tables (only touched rows move; tables grow),
  Adam for the small dense projections.
* **Replay**: a reservoir of past samples is mixed into every step to limit forgetting.
* **Real and augmented samples** (:mod:`streamrec.models.augmentation`): only real samples are sightings
  for the vocabularies' ``min_count`` and expiry, count towards ``popularity`` and
  ``samples_trained`` and enter the replay buffer: a guess must never make an id "frequent",
  keep it alive, or make it look popular to the negative sampler. An augmented sample whose item
  has no row of its own is dropped (counted in ``augmented_dropped``): the fallback row stands for
  every rare item at once, so a pseudo-label on it would teach nothing about that item and move
  the shared row by a guess. Its user may be on the fallback row, as rare users' real samples are:
  the history tower carries what is specific to the user.

Modules: :mod:`.sample` (the training example), :mod:`.model` (tables, towers, loss, serving),
:mod:`.sequence` (the user tower's order term), :mod:`.trend` (the trend prior), :mod:`.sampling`
(negatives ∝ popularity^α with logQ), :mod:`.serialisation` (checkpoints).

``learn_many`` / ``rank`` / ``recommend`` follow river's learn/predict naming so the baselines and
this model run under one evaluation loop.
"""

from streamrec.models.recommender.model import Recommender, RecommenderConfig
from streamrec.models.recommender.sample import REAL, Sample

__all__ = ["REAL", "Recommender", "RecommenderConfig", "Sample"]
