import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamrec.models.augmentation import wordnet_data
from streamrec.models.augmentation.text import (
    STOP_WORDS,
    WordNetSubstitution,
    clean_generation,
    content_vector,
    item_text,
    paraphrase_prompt,
    wordnet_synonyms,
)
from streamrec.models.augmentation.wordnet_data import (
    LEXNAMES,
    WordNetUnavailable,
    ensure_wordnet,
    lexnames_text,
    use_wordnet,
)

SENTENCE = "A thrilling adventure film about a brave hero"


@pytest.fixture(scope="session")
def wordnet() -> Path:
    """The real WordNet, prepared in the shared cache (downloaded from the Debian mirror the first time)."""
    cache = Path(os.environ.get("STREAMREC_CACHE_DIR", Path.home() / ".cache" / "streamrec"))
    return use_wordnet(cache)


# --- item text -------------------------------------------------------------------------------------


def test_item_text_reads_like_a_sentence():
    genres = ["Animation", "Children's", "Comedy"]
    expected = "Toy Story (1995). Animation, Children's, Comedy."
    assert item_text("Toy Story (1995)", genres) == expected
    assert item_text("Toy Story", genres, {"release_year": 1995}) == expected
    assert item_text("Toy Story (1995)", genres, {"release_year": 1995}) == expected  # the year once
    text = item_text("Heat", [], {"year": 1995, "language": "en", "adult": False, "rating": None}, "A heist.")
    assert text == "Heat (1995). Language: en. Adult: no. A heist."
    assert item_text("  Heat  ", ["Crime"], description="Heat. Crime.") == "Heat. Crime."  # no repeat


# --- WordNet data ----------------------------------------------------------------------------------


def test_lexnames_is_wordnet_30s_list_in_nltks_format():
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"
    assert lines[29].split("\t") == ["29", "verb.body", "2"] and lines[2].endswith("\t4")


def test_ensure_wordnet_prepares_a_cache_nltk_reads(wordnet):
    corpus = wordnet / "corpora" / "wordnet"
    assert all((corpus / name).is_file() for name in (*wordnet_data.REQUIRED, "lexnames"))
    assert ensure_wordnet(wordnet.parent) == wordnet  # ready: no work the second time
    from nltk.corpus import wordnet as wn

    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").lexname() == "noun.animal"  # lexnames lines up with the data files
    assert wn.synset("run.v.01").lexname() == "verb.motion"
    assert wn.lemma_from_key("dog%1:05:00::").synset() == wn.synset("dog.n.01")  # index.sense


def test_an_installed_wordnet_is_copied_and_lexnames_generated(wordnet, tmp_path, monkeypatch):
    system = tmp_path / "usr-share-wordnet"
    system.mkdir()
    for name in wordnet_data.REQUIRED:  # a system install: the dict files, no lexnames
        shutil.copyfile(wordnet / "corpora" / "wordnet" / name, system / name)
    monkeypatch.setattr(wordnet_data, "SYSTEM_DIR", system)
    monkeypatch.setattr(wordnet_data, "_download", lambda work: pytest.fail("must not download"))
    nltk_data = ensure_wordnet(tmp_path / "cache")
    assert (nltk_data / "corpora" / "wordnet" / "lexnames").read_text() == lexnames_text()
    assert not list((nltk_data / "corpora").glob("wordnet-*"))  # no temporary directory left behind


def test_fetch_failures_are_loud_and_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet_data, "SYSTEM_DIR", tmp_path / "absent")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package wordnet-base' >&2\nexit 100\n")
    fake.chmod(0o755)
    (bin_dir / "dpkg").symlink_to(shutil.which("dpkg") or "/bin/true")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(WordNetUnavailable, match="apt-get update"):
        ensure_wordnet(tmp_path / "cache")
    fake.unlink()
    with pytest.raises(WordNetUnavailable, match="`apt-get` not found"):
        ensure_wordnet(tmp_path / "cache")
    assert not (tmp_path / "cache" / "nltk_data" / "corpora" / "wordnet").exists()


# --- WordNet substitution --------------------------------------------------------------------------


def test_wordnet_synonyms_use_the_words_common_sense(wordnet):
    assert "movie" in wordnet_synonyms("film")
    brave = wordnet_synonyms("brave")
    assert "courageous" in brave and "weather" not in brave  # the adjective, not the rare verb
    assert wordnet_synonyms("films") == []  # inflected forms are left alone
    assert all(" " not in s and "_" not in s for s in wordnet_synonyms("adventure"))


def test_substitution_changes_words_and_keeps_the_length(wordnet):
    variants = WordNetSubstitution(rate=0.3, seed=0).augment(SENTENCE, 3)
    assert len(variants) == 3 and len(set(variants)) == 3
    words = SENTENCE.split()
    for variant in variants:
        new = variant.split()
        assert len(new) == len(words)  # single-word synonyms only
        changed = [(a, b) for a, b in zip(words, new, strict=True) if a.lower() != b.lower()]
        assert 1 <= len(changed) <= 3
        assert all(a.lower() not in STOP_WORDS for a, _ in changed if a.lower() not in {"a", "an"})
        assert new[-1] == "hero"  # no single-word synonym in its common sense
    assert WordNetSubstitution(rate=0.3, seed=0).augment(SENTENCE, 3) == variants  # seeded


def test_substitution_respects_keep_numbers_and_articles():
    synonyms = {"toy": ["plaything"], "story": ["tale"], "comedy": ["farce"], "film": ["epic"]}.get
    sub = WordNetSubstitution(lambda w: synonyms(w, []), rate=1.0, seed=1)
    assert sub.augment("Toy Story (1995). Comedy.", 2, keep=["Toy", "Story"]) == ["Toy Story (1995). Farce."]
    assert sub.augment("A film from 1995, rated 4", 1) == ["An epic from 1995, rated 4"]  # a → an
    assert sub.augment("Filmmaker 3film sci-film", 3) == []  # no free-standing replaceable word
    assert sub.augment("nothing to replace", 3) == []


# --- LM paraphrases --------------------------------------------------------------------------------


def test_paraphrase_prompt_is_one_line_with_the_text():
    prompt = paraphrase_prompt("Toy Story (1995).\nAnimation.")
    assert "\n" not in prompt and prompt.endswith("Toy Story (1995). Animation.")


ORIGINAL = "Toy Story (1995). Animation, Children's, Comedy."


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("An animated 1995 comedy about toys, for kids.", "An animated 1995 comedy about toys, for kids."),
        (
            'Sure! Here is the rewritten description:\n"A 1995 animated family comedy."',
            "A 1995 animated family comedy.",
        ),
        ("Here's a paraphrase: A 1995 cartoon comedy.\nIt is great!", "A 1995 cartoon comedy."),
        ("Rewritten description: “A toy-filled 1995 cartoon.”", "A toy-filled 1995 cartoon."),
        ("\n\n  - A 1995 animated film for children.", "A 1995 animated film for children."),
        ("toy story (1995) animation, children's, comedy", None),  # the original again
        ("Here is the rewrite:", None),
        ("   ", None),
        ("An animated film. " * 30, None),  # rambling
    ],
)
def test_clean_generation(generated, expected):
    assert clean_generation(generated, ORIGINAL) == expected


# --- content vector --------------------------------------------------------------------------------


def test_content_vector_is_a_renormalised_weighted_mean():
    original = np.array([3.0, 0.0, 0.0])
    rewrites = [np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 5.0]), np.zeros(3)]
    vector = content_vector(original, rewrites, augmented_weight=1.0)
    expected = np.array([1.0, 0.5, 0.5]) / np.linalg.norm([1.0, 0.5, 0.5])  # zero rewrite ignored
    assert np.allclose(vector, expected) and np.isclose(np.linalg.norm(vector), 1.0)
    assert np.allclose(content_vector(original, [], 1.0), [1, 0, 0])
    assert np.allclose(content_vector(original, rewrites, 0.0), [1, 0, 0])
    assert not content_vector(np.zeros(3), [np.zeros(3)], 1.0).any()
    assert np.allclose(content_vector(np.zeros(3), [np.array([0, 2.0, 0])], 1.0), [0, 1, 0])
