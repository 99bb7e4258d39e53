"""NoProp (discrete time): every block learns, on its own, to denoise a noisy label embedding."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from optzoo._core.validation import NON_NEGATIVE, POSITIVE, Interval
from optzoo.local_learning._trainer import (
    BATCH_SIZE,
    EPOCHS,
    SEED,
    Data,
    FitResult,
    LocalTrainer,
    check_num_classes,
    guarded_step,
    minibatches,
    optimizer_state_bytes,
    seeded_generator,
)
from optzoo.registry import register

COSINE_OFFSET = 0.008  # the cosine schedule's offset s (Nichol & Dhariwal, 2021)


def cosine_alpha_bar(num_blocks: int, offset: float = COSINE_OFFSET) -> Tensor:
    """``alpha_bar_t`` for ``t = 0..T`` (float64): the share of label signal in ``z_t``.

    NoProp's time runs from noise (``t = 0``) to label (``t = T``): ``q(z_t | y) =
    N(sqrt(alpha_bar_t) u_y, (1 - alpha_bar_t) I)``. It follows the cosine schedule
    ``f(tau) = cos^2(pi/2 (tau + s) / (1 + s)) / cos^2(pi/2 s / (1 + s))`` at noise levels
    ``tau_t = 1 - t / (T + 1)``: ``alpha_bar_0 = 0`` (pure noise) rising to ``alpha_bar_T < 1``
    (the noise-free end, whose signal-to-noise ratio is infinite, is left out).
    """
    t = torch.arange(num_blocks + 1, dtype=torch.float64)
    tau = 1.0 - t / (num_blocks + 1)

    def f(x: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * (x + offset) / (1 + offset)) ** 2

    alpha_bar = f(tau) / f(torch.zeros((), dtype=torch.float64))
    alpha_bar[0] = 0.0  # cos(pi/2) is 0 only up to rounding
    return alpha_bar


def snr(alpha_bar: Tensor) -> Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)``."""
    return alpha_bar / (1.0 - alpha_bar)


def inference_coefficients(alpha_bar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a_t, b_t, c_t)`` for ``t = 1..T`` (index ``t - 1``) of the inference step
    ``z_t = a_t u_hat_t(z_{t-1}, x) + b_t z_{t-1} + sqrt(c_t) eps``: the Gaussian posterior
    ``q(z_t | z_{t-1}, y)`` with ``u_y`` replaced by block ``t``'s prediction, where
    ``alpha_{t-1} = alpha_bar_{t-1} / alpha_bar_t``::

        a_t = sqrt(alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})
        b_t = sqrt(alpha_{t-1}) (1 - alpha_bar_t) / (1 - alpha_bar_{t-1})
        c_t = (1 - alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})
    """
    now, before = alpha_bar[1:], alpha_bar[:-1]
    alpha = before / now
    a = now.sqrt() * (1 - alpha) / (1 - before)
    b = alpha.sqrt() * (1 - now) / (1 - before)
    c = (1 - now) * (1 - alpha) / (1 - before)
    return a, b, c


class DenoisingBlock(nn.Module):
    """One NoProp block ``u_hat_t(z_{t-1}, x)``: an input path and a label-embedding path, fused
    by an MLP into class logits; the output is the softmax-weighted sum of the class
    embeddings (the paper's block design, with fully connected paths for vector inputs)."""

    def __init__(self, in_features: int, embedding_dim: int, num_classes: int, hidden: int):
        super().__init__()
        self.input_path = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.label_path = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, z: Tensor, x: Tensor, embedding: Tensor) -> Tensor:
        features = torch.cat([self.input_path(x), self.label_path(z)], dim=1)
        return self.fuse(features).softmax(dim=1) @ embedding


class NoPropNetwork(nn.Module):
    """The network NoProp trains: ``num_blocks`` denoising blocks, the class-embedding matrix
    ``embedding`` (a buffer: rows are the class embeddings ``u_y``; one-hot by default) and a
    linear ``head`` reading the class from ``z_T``.

    ``forward(x, generator)`` runs inference: ``z_0 ~ N(0, I)``, then ``z_t = a_t u_hat_t +
    b_t z_{t-1} + sqrt(c_t) eps`` for ``t = 1..T``, and returns the head's logits on ``z_T``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_blocks: int = 10,
        hidden: int = 256,
        embedding: Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_blocks < 1 or in_features < 1 or num_classes < 2 or hidden < 1:
            raise ValueError(
                "NoPropNetwork needs num_blocks >= 1, in_features >= 1, num_classes >= 2 and "
                "hidden >= 1"
            )
        if embedding is None:
            embedding = torch.eye(num_classes)
        if embedding.ndim != 2 or embedding.shape[0] != num_classes:
            raise ValueError(f"embedding must have shape ({num_classes}, embedding_dim)")
        self.num_classes, self.num_blocks = num_classes, num_blocks
        self.register_buffer("embedding", embedding.clone().float())
        dim = embedding.shape[1]
        self.blocks = nn.ModuleList(
            DenoisingBlock(in_features, dim, num_classes, hidden) for _ in range(num_blocks)
        )
        self.head = nn.Linear(dim, num_classes)
        alpha_bar = cosine_alpha_bar(num_blocks)
        a, b, c = inference_coefficients(alpha_bar)
        self.register_buffer("alpha_bar", alpha_bar.float())
        self.register_buffer("coefficients", torch.stack([a, b, c.sqrt()]).float())

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(len(x), self.embedding.shape[1], generator=generator, dtype=x.dtype)
        for t, block in enumerate(self.blocks):
            a, b, sqrt_c = self.coefficients[:, t]
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype)
            z = a * block(z, x, self.embedding) + b * z + sqrt_c * noise
        return self.head(z)


@register(
    family="local_learning",
    paper="NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
    year=2025,
    oracle="layer_local",
    state_bytes_per_param=8,
    reference_problem="mlp",
    convergence=(2, 0.15),
    test_hyperparameters={"epochs": 2, "lr": 1e-2, "batch_size": 16},
)
class NoProp(LocalTrainer):
    """NoProp-DT, the discrete-time method of "NoProp: Training Neural Networks without
    Back-propagation or Forward-propagation" (Li, Teh, Pascanu, 2025).

    The representation of every block is fixed beforehand to a noised label embedding:
    ``q(z_t | y) = N(sqrt(alpha_bar_t) u_y, (1 - alpha_bar_t) I)`` (``cosine_alpha_bar``). Block
    ``t`` of a ``NoPropNetwork`` sees the input ``x`` and a sample ``z_{t-1}`` of that
    distribution and learns, with its own AdamW, to predict the clean embedding ``u_y``; the
    linear head learns to read the class from ``z_T ~ q(z_T | y)``. No signal passes between
    blocks during training. For each epoch, for ``t = 1..T``, over minibatches::

        L_t   = (T / 2) eta (SNR(t) - SNR(t-1)) ||u_hat_t(z_{t-1}, x) - u_y||^2   (batch mean)
        L_out = cross_entropy(head(z_T), y)
        theta_t <- AdamW step on L_t;  theta_out <- AdamW step on L_out

    The paper's KL term ``KL(q(z_0 | y) || N(0, I))`` has no trainable parameter here (fixed
    embedding, ``alpha_bar_0 = 0``) and is left out. Inference: ``NoPropNetwork.forward``.
    Defaults from the paper's NoProp-DT setup as we read it: T = 10 blocks (set on the network),
    eta = 0.1, AdamW with lr 1e-3 and weight decay 1e-3, batch 128; the one-hot class embedding
    is one of the paper's embedding choices. AdamW keeps 8 bytes of state per parameter.
    """

    hyperparameter_ranges: ClassVar[dict[str, Interval]] = {
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "eta": POSITIVE,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "seed": SEED,
    }

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        eta: float = 0.1,
        epochs: int = 10,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(
            lr=lr,
            weight_decay=weight_decay,
            eta=eta,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
        )
        self.lr, self.weight_decay, self.eta = lr, weight_decay, eta
        self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), seed

    @classmethod
    def reference_model(cls, in_features: int, num_classes: int, hidden: int = 32) -> nn.Module:
        """A small ``NoPropNetwork`` (T = 10 blocks of width ``hidden``)."""
        return NoPropNetwork(in_features, num_classes, num_blocks=10, hidden=hidden)

    @staticmethod
    def sample_z(model: NoPropNetwork, t: int, labels: Tensor, noise: Tensor) -> Tensor:
        """``z_t = sqrt(alpha_bar_t) u_y + sqrt(1 - alpha_bar_t) noise``, a sample of
        ``q(z_t | y)``."""
        alpha_bar = model.alpha_bar[t]
        return alpha_bar.sqrt() * model.embedding[labels] + (1 - alpha_bar).sqrt() * noise

    def denoising_loss(
        self, model: NoPropNetwork, t: int, inputs: Tensor, labels: Tensor, noise: Tensor
    ) -> Tensor:
        """``L_t`` of block ``t`` (1-based) on a batch, with ``z_{t-1}`` built from ``noise``."""
        ratio = snr(model.alpha_bar.double())
        weight = 0.5 * model.num_blocks * self.eta * float(ratio[t] - ratio[t - 1])
        z = self.sample_z(model, t - 1, labels, noise)
        predicted = model.blocks[t - 1](z, inputs, model.embedding)
        return weight * (predicted - model.embedding[labels]).square().sum(dim=1).mean()

    def predict(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Class predictions of the inference chain, its noise drawn from ``seed``."""
        with torch.no_grad():
            return model(inputs, seeded_generator(self.seed, 9)).argmax(dim=-1)

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, NoPropNetwork):
            raise ValueError(f"NoProp trains a NoPropNetwork, got {type(model).__name__}")

    def _fit(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, evaluation: Data | None
    ) -> FitResult:
        check_num_classes(labels, model.num_classes)
        if evaluation is not None:
            check_num_classes(evaluation[1], model.num_classes)

        def adamw(params) -> torch.optim.AdamW:
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

        block_optimizers = [adamw(block.parameters()) for block in model.blocks]
        head_optimizer = adamw(model.head.parameters())
        generator = seeded_generator(self.seed, 3)
        dim = model.embedding.shape[1]
        result = FitResult()
        for epoch in range(self.epochs):
            total, count = 0.0, 0
            for t in range(1, model.num_blocks + 1):
                for batch in minibatches(len(inputs), self.batch_size, generator):
                    x, y = inputs[batch], labels[batch]
                    noise = torch.randn(len(y), dim, generator=generator, dtype=inputs.dtype)
                    loss = self.denoising_loss(model, t, x, y, noise)
                    if guarded_step(loss, block_optimizers[t - 1]):
                        total, count = total + float(loss.detach()), count + 1
                    else:
                        result.skipped_updates += 1
                    noise = torch.randn(len(y), dim, generator=generator, dtype=inputs.dtype)
                    z_last = self.sample_z(model, model.num_blocks, y, noise)
                    head_loss = functional.cross_entropy(model.head(z_last), y)
                    if not guarded_step(head_loss, head_optimizer):
                        result.skipped_updates += 1
            mean = total / count if count else math.nan
            self._record(result, model, inputs, labels, evaluation, mean, epoch=epoch)
        result.state_bytes = sum(map(optimizer_state_bytes, [*block_optimizers, head_optimizer]))
        return result
