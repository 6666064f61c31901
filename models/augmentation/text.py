"""Item text augmentation, the pure parts: item text, WordNet substitution, LM paraphrase I/O, content vector.

A new item has no interactions, so an id embedding knows nothing about it; its text does. The
recommender's item tower adds a projection of a *content vector* (a sentence embedding of the item's
text), which makes an item recommendable from its text alone. A single embedding of one short
text is brittle: two items described in different words land apart. Embedding a few rewrites of the
same text and averaging (:func:`content_vector`) gives a vector that depends on the meaning more
than on the wording.

Rewrites come from two sources:

* :class:`WordNetSubstitution` (EDA's synonym replacement): cheap and deterministic, replaces a
  fraction of content words by WordNet synonyms;
* a small instruct LM (run elsewhere, see ``models/inference``) asked with :func:`paraphrase_prompt`,
  its output filtered by :func:`clean_generation`.

Nothing here loads a model or downloads anything; WordNet comes from the local cache prepared by
:mod:`streamrec.models.augmentation.wordnet_data`.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

# Function words never worth replacing (NLTK's English list, abridged; NLTK's copy needs a download).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()
)

# A word: letters only, not glued to digits, apostrophes or hyphens ("Children's", "sci-fi", "3D" stay whole).
_WORD = re.compile(r"(?<![\w'’-])[A-Za-z]+(?![\w'’-])")


def item_text(
    title: str,
    categories: Sequence[str] = (),
    attributes: Mapping[str, Any] | None = None,
    description: str = "",
) -> str:
    """One plain-text description of an item, e.g. ``"Toy Story (1995). Animation, Children's, Comedy."``.

    The year (``release_year`` or ``year``) goes after the title unless the title already has it;
    other attributes follow as ``"Name: value."`` sentences (``None`` skipped); a description, if
    given and not already the same text, comes last. This is what gets embedded and rewritten.
    """
    attributes = dict(attributes or {})
    title = " ".join(title.split())
    year, other_year = attributes.pop("release_year", None), attributes.pop("year", None)
    year = other_year if year is None else year
    if year is not None and f"({year})" not in title:
        title = f"{title} ({year})"
    parts = [_sentence(title)]
    if categories:
        parts.append(_sentence(", ".join(" ".join(c.split()) for c in categories if c.strip())))
    for name, value in attributes.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        parts.append(_sentence(f"{name.replace('_', ' ').capitalize()}: {value}"))
    description = " ".join(description.split())
    text = " ".join(p for p in parts if p)
    if description and description.casefold() not in text.casefold():
        text = f"{text} {_sentence(description)}"
    return text


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else f"{text}."


# --- WordNet synonym substitution ----------------------------------------------------------------


def wordnet_synonyms(word: str, max_senses: int = 2) -> list[str]:
    """Single-word WordNet synonyms of ``word`` from its ``max_senses`` most frequent senses.

    Without a part-of-speech tagger the sense is unknown, so senses are ranked by how often the
    word itself is tagged with them in WordNet's sense-tagged corpus (``cntlist``), and only senses
    with the part of speech of the most frequent one are used: "brave" gets "courageous" (its
    common adjective sense), not "weather" (a rare verb sense). Only senses of
    which the *surface form* is itself a lemma are used, so inflected forms ("films", "thrilling"
    as a form of "thrill") are left alone rather than replaced by an uninflected synonym. Needs
    WordNet on ``nltk.data.path`` (see :func:`streamrec.models.augmentation.wordnet_data.use_wordnet`).
    """
    return list(_cached_synonyms(word.lower(), max_senses))


@functools.lru_cache(maxsize=65_536)
def _cached_synonyms(word: str, max_senses: int) -> tuple[str, ...]:
    from nltk.corpus import wordnet

    try:
        synsets = wordnet.synsets(word)
    except LookupError as exc:
        raise LookupError("WordNet is not on nltk.data.path: call wordnet_data.use_wordnet(cache_dir) first") from exc
    senses = []
    for order, synset in enumerate(synsets):
        for lemma in synset.lemmas():
            if lemma.name().lower() == word:
                senses.append((-lemma.count(), order, synset))
                break
    senses.sort(key=lambda sense: sense[:2])
    if not senses:
        return ()
    pos = _pos(senses[0][2])
    synonyms: list[str] = []
    for *_, synset in [sense for sense in senses if _pos(sense[2]) == pos][:max_senses]:
        for name in synset.lemma_names():
            if "_" not in name and name.lower() != word and name.lower() not in map(str.lower, synonyms):
                synonyms.append(name)
    return tuple(synonyms)


def _pos(synset: Any) -> str:
    return "a" if synset.pos() == "s" else synset.pos()  # adjective satellites are adjectives


class WordNetSubstitution:
    """EDA synonym replacement: each variant replaces a fraction ``rate`` of the content words.

    Content words are alphabetic words of at least ``min_word_length`` letters that are not stop
    words; numbers, words glued to digits/apostrophes/hyphens and words in ``keep`` (e.g. the
    title's, since a title is a name, not a description) are never touched. Capitalisation is
    carried over. Reproducible for a given seed and call order.
    """

    def __init__(
        self,
        synonyms: Callable[[str], list[str]] | None = None,
        rate: float = 0.2,
        seed: int = 0,
        min_word_length: int = 3,
    ) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("rate must be in (0, 1]")
        self.synonyms = synonyms or wordnet_synonyms
        self.rate = rate
        self.min_word_length = min_word_length
        self._rng = random.Random(seed)

    def augment(self, text: str, n: int, keep: Collection[str] = ()) -> list[str]:
        """Up to ``n`` distinct variants of ``text``, each different from it (fewer if few words have synonyms)."""
        kept = {word.lower() for word in keep}
        spots = []  # (match, synonyms) of every replaceable word
        for match in _WORD.finditer(text):
            word = match.group()
            lower = word.lower()
            if len(word) < self.min_word_length or lower in STOP_WORDS or lower in kept:
                continue
            options = [s for s in self.synonyms(lower) if s.lower() != lower]
            if options:
                spots.append((match, options))
        if not spots or n <= 0:
            return []
        content_words = sum(
            1
            for m in _WORD.finditer(text)
            if len(m.group()) >= self.min_word_length and m.group().lower() not in STOP_WORDS
        )
        count = min(len(spots), max(1, round(self.rate * content_words)))
        variants: list[str] = []
        for _ in range(4 * n):  # a few retries: two draws may give the same variant
            chosen = sorted(self._rng.sample(range(len(spots)), count))
            pieces, last = [], 0
            for index in chosen:
                match, options = spots[index]
                replacement = _match_case(self._rng.choice(options), match.group())
                pieces += [_fix_article(text[last : match.start()], replacement), replacement]
                last = match.end()
            variant = "".join([*pieces, text[last:]])
            if variant != text and variant not in variants:
                variants.append(variant)
                if len(variants) == n:
                    break
        return variants


_ARTICLE = re.compile(r"(?<![\w'’-])([Aa])(n?)(\s+)$")


def _fix_article(before: str, replacement: str) -> str:
    """ "a"/"an" right before a replaced word, agreeing with the replacement's first letter."""
    match = _ARTICLE.search(before)
    if match is None:
        return before
    article = match.group(1) + ("n" if replacement[0].lower() in "aeiou" else "")
    return before[: match.start()] + article + match.group(3)


def _match_case(replacement: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


# --- LM paraphrases --------------------------------------------------------------------------------


def paraphrase_prompt(text: str) -> str:
    """The instruction for a small instruct LM to rewrite an item description (one line)."""
    text = " ".join(text.split())
    return (
        "Rewrite this item description in different words. Keep every fact (title, year, genres) and do "
        f"not add new ones. Answer with the rewritten description only, on one line: {text}"
    )


_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|okay|ok|of course)\b[,.!]?\s*)?"
    r"(?:(?:here(?:'s| is| are)\b[^:]{0,60}|(?:the\s+|a\s+)?(?:rewritten|paraphrased?|rephrased)\b[^:]{0,40}"
    r"|description|answer|output):\s*)?",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`*"


def clean_generation(generated: str, original: str, max_chars: int | None = None) -> str | None:
    """The usable rewrite in an LM's output, or ``None`` to discard it.

    Takes the first line with content (a preamble line ending in ``:`` is skipped), strips
    preambles such as "Sure! Here is the rewritten description:" and wrapping quotes, and rejects
    an empty result, one longer than ``max_chars`` (default: twice the original, at least 200
    characters; small LMs that ramble are not describing the item any more) and one that only
    repeats the original (ignoring case, spacing and punctuation).
    """
    limit = max_chars if max_chars is not None else max(200, 2 * len(original))
    for raw in generated.splitlines():
        line = raw.strip().lstrip("-•> ").strip()
        if not line:
            continue
        line = _PREAMBLE.sub("", line, count=1).strip().strip(_QUOTES).strip()
        if not line:
            continue  # the line was only a preamble ("Here is the rewrite:")
        break
    else:
        return None
    if len(line) > limit or _normalised(line) == _normalised(original):
        return None
    return line


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


# --- content vector ---------------------------------------------------------------------------------


def content_vector(original: np.ndarray, augmented: Sequence[np.ndarray], augmented_weight: float = 1.0) -> np.ndarray:
    """The item's content vector: weighted mean of the L2-normalised text embeddings, renormalised.

    The original text weighs 1 and the rewrites together weigh ``augmented_weight`` (each
    ``augmented_weight / len(augmented)``), so the number of rewrites that survived cleaning does
    not decide how far the vector moves from the original. Zero vectors (no embedding) are
    ignored; the result is zeros only if every input is.
    """
    base = _unit(np.asarray(original, dtype=np.float32))
    total = base.copy()
    rewrites = [_unit(np.asarray(v, dtype=np.float32)) for v in augmented]
    rewrites = [v for v in rewrites if v.any()]
    if rewrites and augmented_weight > 0:
        total = total + (augmented_weight / len(rewrites)) * np.sum(rewrites, axis=0)
    return _unit(total)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else np.zeros_like(vector)
