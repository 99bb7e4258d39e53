"""A tiny character-level transformer language model on text that ships with Python itself.

The corpus is the documentation text of CPython's ``pydoc_data.topics`` (the help pages behind
``help("if")`` etc., about 465k characters in Python 3.11; the text changes a little between
Python versions, so targets are only comparable on one Python minor version). Topics are
joined in sorted order; the first 90% of the characters are for training and the last 10% for
validation. Characters map to a fixed 97-symbol vocabulary (newline, the 95 printable ASCII
characters and one symbol for anything else), independent of the text.

The model is a 2-layer pre-LayerNorm decoder (width 64, 4 heads, MLP 256, context 64, learned
positions; 0.11M parameters, nearly all in 2-D weight matrices), which is the workload the
low-rank optimizer family is judged on. The metric is the validation cross-entropy in
nats per character on 64 fixed windows.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from optzoo.bench.workloads.base import (
    Forward,
    ModuleTask,
    Workload,
    finite_or_inf,
    generator,
    offers,
    register_workload,
    seeded_module,
)

VOCABULARY = "\n" + "".join(chr(c) for c in range(32, 127))
OTHER = len(VOCABULARY)  # the symbol of every character outside VOCABULARY
VOCAB_SIZE = OTHER + 1
CONTEXT = 64
WIDTH = 64
HEADS = 4
LAYERS = 2
BATCH_SIZE = 16
EVAL_WINDOWS = 64
TRAIN_FRACTION = 0.9


def corpus_text() -> str:
    """The text of ``pydoc_data.topics``, topics joined in sorted order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def encode(text: str) -> Tensor:
    """Token ids (int64) of ``text`` in the fixed vocabulary."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(128, OTHER, dtype=np.int64)
    table[[ord(c) for c in VOCABULARY]] = np.arange(len(VOCABULARY))
    ids = np.where(codes < 128, table[np.minimum(codes, 127)], OTHER)
    return torch.from_numpy(ids)


@lru_cache(maxsize=1)
def load_corpus() -> tuple[Tensor, Tensor]:
    """Training and validation token ids. Cached: do not modify the result."""
    ids = encode(corpus_text())
    cut = int(len(ids) * TRAIN_FRACTION)
    return ids[:cut], ids[cut:]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and earlier positions only."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        mixed = functional.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), is_causal=True
        )
        return self.output(mixed.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention then a GELU MLP, each on a residual branch."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class CharTransformer(nn.Module):
    """Decoder-only transformer mapping token ids ``(batch, length)`` to next-token logits
    ``(batch, length, vocab)``; weights initialised N(0, 0.02), biases zero (GPT-2 style)."""

    def __init__(
        self, vocab: int = VOCAB_SIZE, width: int = WIDTH, heads: int = HEADS, layers: int = LAYERS
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(CONTEXT, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[-1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        return self.head(self.final_norm(self.blocks(x)))


class CharLMTask(ModuleTask):
    """Next-character prediction on random training windows; ``evaluate`` is the validation
    loss in nats per character."""

    def __init__(self, seed: int) -> None:
        self.train_ids, validation = load_corpus()
        self.model = seeded_module(seed, CharTransformer)
        self.seed = seed
        starts = torch.linspace(0, len(validation) - CONTEXT - 1, EVAL_WINDOWS).long()
        windows = validation[starts[:, None] + torch.arange(CONTEXT + 1)]
        self.eval_batch = windows[:, :-1], windows[:, 1:]

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        high = len(self.train_ids) - CONTEXT - 1
        starts = torch.randint(high, (BATCH_SIZE,), generator=generator(self.seed, "batch", step))
        windows = self.train_ids[starts[:, None] + torch.arange(CONTEXT + 1)]
        return windows[:, :-1], windows[:, 1:]

    def compute_loss(self, forward: Forward, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch
        return functional.cross_entropy(forward(inputs).flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def evaluate(self) -> float:
        return finite_or_inf(float(self.loss(self.eval_batch)))


UNIFORM_LOSS = math.log(VOCAB_SIZE)  # the loss of a model that knows nothing (4.57 nats)

CHAR_LM = register_workload(
    Workload(
        name="char_lm",
        description="character-level transformer LM (2 layers, width 64, context 64, 0.11M "
        "params) on CPython's pydoc_data.topics text, batch 16x64; metric: validation loss "
        "(nats/char)",
        build=CharLMTask,
        data=load_corpus,
        oracles=offers("gradient", "gradient_closure"),
        metric="val_loss",
        max_steps=400,
        time_budget_s=60.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)
