"""On-the-fly augmentation and sample expansion: more, and more varied, training samples where data is thin.

Pipeline order, per micro-batch::

    events ──▶ real samples ──▶ augmentation ──▶ training (Recommender.learn_many, one step)
               (kind "real")    │
                                ├─ budget: AdaptiveRatio (how many for this event: most for cold
                                │  users/items, none for heavy users), TokenBucket (samples per second
                                │  overall), PerUserCap (LLM pseudo-labels per user per window)
                                ├─ SequenceViews       views of the history → same target
                                ├─ ContentNeighbours   items like the chosen one → pseudo-positives
                                ├─ PopularityNegatives popular unseen items → explicit negatives
                                └─ pseudo_labels       LLM-scored candidates, agreed with the model

Item text (:mod:`.text`) is the other side: an item's text and its rewrites (WordNet substitution,
LM paraphrases) are embedded and averaged into the item's content vector
(``Recommender.set_content``), so a new item is recommendable from its text alone, and content
neighbours and LLM candidates have something to be similar by.

Every operator has an on/off switch, a budget (``max_per_event`` / ``max_per_user``) and a sample
weight in its frozen config, is pure apart from its own seeded RNG, and tags what it makes:

=====================  =====  ============================  =====================================================
kind                   label  made by                       what it is
=====================  =====  ============================  =====================================================
``real``               1      the stream                    an observed click or purchase
``seq_crop``           1      :class:`SequenceViews`        the target after a contiguous crop of the history
``seq_mask``           1      :class:`SequenceViews`        the target after the history with items masked
``seq_reorder``        1      :class:`SequenceViews`        the target after the history with a stretch shuffled
``content_neighbour``  1      :class:`ContentNeighbours`    an unseen item whose content is like the chosen one's
``negative``           0      :class:`PopularityNegatives`  a popular item the user has not chosen
``llm_positive``       1      :func:`pseudo_labels`         the LM says Yes and the model agrees
``llm_negative``       0      :func:`pseudo_labels`         the LM says No and the model agrees
=====================  =====  ============================  =====================================================

The recommender treats every kind but ``real`` as a guess: augmented samples are no sightings for
the vocabularies, add nothing to popularity, ``samples_trained`` or the replay buffer, and are
dropped when their item has no row of its own (see :mod:`streamrec.models.recommender`).
"""

from streamrec.models.augmentation.budget import AdaptiveRatio
from streamrec.models.augmentation.expansion import (
    LLM_NEGATIVE,
    LLM_POSITIVE,
    ExpansionConfig,
    PerUserCap,
    calibrated_confidences,
    candidates_by_content,
    expansion_prompt,
    pseudo_labels,
    rank_percentiles,
)
from streamrec.models.augmentation.negatives import NEGATIVE, PopularityNegatives, PopularityNegativesConfig
from streamrec.models.augmentation.neighbours import CONTENT_NEIGHBOUR, ContentNeighbours, ContentNeighboursConfig
from streamrec.models.augmentation.sequence import (
    MASK_ITEM,
    SEQ_CROP,
    SEQ_MASK,
    SEQ_REORDER,
    SequenceViews,
    SequenceViewsConfig,
)
from streamrec.models.augmentation.text import (
    WordNetSubstitution,
    clean_generation,
    content_vector,
    item_text,
    paraphrase_prompt,
    wordnet_synonyms,
)
from streamrec.models.augmentation.wordnet_data import WordNetUnavailable, ensure_wordnet, use_wordnet
from streamrec.models.rate_limit import TokenBucket

KINDS = (SEQ_CROP, SEQ_MASK, SEQ_REORDER, CONTENT_NEIGHBOUR, NEGATIVE, LLM_POSITIVE, LLM_NEGATIVE)

__all__ = [
    "CONTENT_NEIGHBOUR",
    "KINDS",
    "LLM_NEGATIVE",
    "LLM_POSITIVE",
    "MASK_ITEM",
    "NEGATIVE",
    "SEQ_CROP",
    "SEQ_MASK",
    "SEQ_REORDER",
    "AdaptiveRatio",
    "ContentNeighbours",
    "ContentNeighboursConfig",
    "ExpansionConfig",
    "PerUserCap",
    "PopularityNegatives",
    "PopularityNegativesConfig",
    "SequenceViews",
    "SequenceViewsConfig",
    "TokenBucket",
    "WordNetSubstitution",
    "WordNetUnavailable",
    "calibrated_confidences",
    "candidates_by_content",
    "clean_generation",
    "content_vector",
    "ensure_wordnet",
    "expansion_prompt",
    "item_text",
    "paraphrase_prompt",
    "pseudo_labels",
    "rank_percentiles",
    "use_wordnet",
    "wordnet_synonyms",
]
