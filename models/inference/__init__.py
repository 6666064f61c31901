"""Transformer inference for the stream: model backends, a dynamic batcher and an embedding cache.

A pure library (no Kafka here): the inference worker's stream shell owns the topics and calls
:class:`DynamicBatcher.submit`; the batcher forms batches and calls the handlers, which wrap the
backends. Typical wiring::

    encoder, llm, cache = TextEncoder(), CausalLM(), EmbeddingCache(100_000)
    handlers = {
        "embed": lambda texts: list(cache.get_or_compute(encoder.model_id, texts, encoder.embed)),
        "yes_no": lambda prompts: list(llm.yes_no(prompts)),
        "generate": lambda prompts: llm.generate(prompts, max_new_tokens=32),
    }
    lengths = {"embed": encoder.token_lengths, "yes_no": llm.token_lengths, "generate": llm.token_lengths}
    batcher = DynamicBatcher(handlers, max_batch=64, max_wait_s=0.005, max_queue=4096,
                             length_of=lambda kind, payload: lengths[kind]([payload])[0])

Importing this package does not import transformers; the backends load it when a model is built.
"""

from streamrec.models.inference.backends import CausalLM, TextEncoder, minilm_path, pick_device, smollm2_location
from streamrec.models.inference.batcher import BatcherStats, BatcherStopped, DynamicBatcher, Expired, QueueFull
from streamrec.models.inference.cache import EmbeddingCache

__all__ = [
    "BatcherStats",
    "BatcherStopped",
    "CausalLM",
    "DynamicBatcher",
    "EmbeddingCache",
    "Expired",
    "QueueFull",
    "TextEncoder",
    "minilm_path",
    "pick_device",
    "smollm2_location",
]
