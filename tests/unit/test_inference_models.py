"""The inference backends with the real packaged models, on CPU and offline.

Each model is loaded once per module (SmolLM2 from its GGUF file takes most of this file's time).
"""

import os

import numpy as np
import pytest
import torch

from streamrec.models.inference import CausalLM, EmbeddingCache, TextEncoder, pick_device

# Nothing may come from a hub: the models load from the packages' folders. The backends import
# transformers lazily, so these apply unless another module imported it first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module, restored afterwards (the setting is process-wide).

    On a small shared machine, OpenMP threads that spin-wait for a descheduled sibling made a MiniLM
    call 20x slower with 2 threads than with 1 (measured on the 2-core dev box).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def llm() -> CausalLM:
    return CausalLM(device="cpu")


def test_pick_device():
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    device, dtype = pick_device("auto")
    assert (device.type, dtype) == (("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32))
    with pytest.raises(ValueError):
        pick_device("tpu")


def test_minilm_embeddings_are_normalised_and_meaningful(encoder):
    texts = [
        "a space opera with starships",
        "Star Wars (1977) science fiction adventure",
        "a romantic comedy in Paris",
    ]
    vectors = encoder.embed(texts)
    assert encoder.dim == 384 and vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query, star_wars, romance = vectors
    assert query @ star_wars > query @ romance
    assert encoder.embed([]).shape == (0, 384)


def test_embeddings_match_sentence_transformers_and_do_not_depend_on_the_batch(encoder):
    from sentence_transformers import SentenceTransformer

    texts = ["Toy Story (1995)", "GoldenEye (1995) action adventure thriller " * 5, "Heat"]
    reference = SentenceTransformer(encoder.path, device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.embed(texts), reference, atol=1e-4)
    np.testing.assert_allclose(encoder.embed(texts[:1])[0], reference[0], atol=1e-4)
    lengths = encoder.token_lengths(texts)
    assert lengths[2] < lengths[0] < lengths[1] and all(n <= encoder.max_length for n in lengths)


def test_embedding_cache(encoder):
    cache = EmbeddingCache(max_entries=2)
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return encoder.embed(texts)

    first = cache.get_or_compute(encoder.model_id, ["Heat", "Heat", "Fargo"], embed)
    assert calls == [["Heat", "Fargo"]]  # duplicates embedded once
    np.testing.assert_array_equal(first[0], first[1])
    again = cache.get_or_compute(encoder.model_id, ["Fargo", "Heat"], embed)
    assert len(calls) == 1 and cache.hits == 2  # nothing embedded twice
    np.testing.assert_array_equal(again, first[[2, 0]])
    with pytest.raises(ValueError):
        cache.get(encoder.model_id, "Heat")[0] = 0.0  # stored vectors are read-only
    cache.get_or_compute(encoder.model_id, ["Casablanca"], embed)  # evicts the least recently used: Fargo
    assert len(cache) == 2 and (encoder.model_id, "Fargo") not in cache
    assert cache.get("another-model", "Heat") is None  # keys include the model
    assert cache.stats()["entries"] == 2


def test_random_weight_encoder_has_the_same_shape():
    random_encoder = TextEncoder.with_random_weights(device="cpu")
    vectors = random_encoder.embed(["Heat", "Fargo"])
    assert vectors.shape == (2, 384) and random_encoder.model_id.endswith("#random")


def test_yes_no_gives_one_finite_margin_per_prompt(llm):
    prompts = [
        llm.chat_prompt("Is Paris the capital of France? Answer Yes or No."),
        llm.chat_prompt("Would someone who loved Star Wars enjoy The Empire Strikes Back? Answer Yes or No."),
        "Question: is the sky green? Answer:",
    ]
    margins = llm.yes_no(prompts)
    assert margins.shape == (3,) and np.isfinite(margins).all()
    np.testing.assert_allclose(llm.yes_no(prompts[2:]), margins[2:], atol=1e-3)


def test_generate_returns_new_text_and_batching_does_not_change_greedy_output(llm):
    prompts = ["Describe the movie Star Wars (1977) in one sentence.", "Say hello."]
    batched = llm.generate(prompts, max_new_tokens=6)
    assert len(batched) == 2 and all(isinstance(t, str) and t for t in batched)
    assert "<|im" not in batched[0] and not batched[0].startswith("Describe")
    assert llm.generate(prompts[1:], max_new_tokens=6) == batched[1:]
    sampled = [llm.generate(prompts[1:], max_new_tokens=2, temperature=1.0, seed=7) for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded sampling is reproducible
