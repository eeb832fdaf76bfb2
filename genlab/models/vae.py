"""The VAE of the lab: an encoder giving ``z_mean`` and ``z_log_var``, the reparameterisation, a decoder.

Two architectures share one interface:
- ``conv``: a DCGAN-style trunk (two stride-2 4x4 convolutions, 32 and 64 channels, 28 -> 14 -> 7, then a
  256-unit layer) and its mirror image with twice the channels (128 and 64) in the decoder: the wider decoder
  lowers the test neg-ELBO, while a wider encoder too would cost more training time than the study's budgets
  allow for a small gain (docs/results.md, "Quality reached");
- ``mlp``: the classic 784-400-z network of Kingma & Welling.

``Encoder.forward`` returns one tensor ``[z_mean | z_log_var]`` (B, 2*latent_dim) so it can be logged and served
as a plain model; ``Decoder.forward`` returns Bernoulli logits (B, 1, 28, 28). The GAN reuses both classes.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab import data
from genlab.configs import ARCHS  # the CLI lists them without importing torch

HIDDEN = {"conv": 256, "mlp": 400}


def trunk(arch: str) -> nn.Sequential:
    """Image (B, 1, 28, 28) -> features (B, HIDDEN[arch]). Shared by the encoder and the GAN discriminator."""
    if arch == "conv":
        return nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, HIDDEN[arch]), nn.LeakyReLU(0.2),
        )
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, HIDDEN[arch]), nn.ReLU())
    raise ValueError(f"unknown arch '{arch}' (choose from {', '.join(ARCHS)})")


class Encoder(nn.Module):
    def __init__(self, latent_dim: int, arch: str = "conv"):
        super().__init__()
        self.latent_dim, self.arch = latent_dim, arch
        self.trunk = trunk(arch)
        self.head = nn.Linear(HIDDEN[arch], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, 2*latent_dim): z_mean then z_log_var."""
        return self.head(self.trunk(x))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_mean, z_log_var = self(x).chunk(2, dim=1)
        return z_mean, z_log_var


class Decoder(nn.Module):
    """Latent (B, latent_dim) -> Bernoulli logits (B, 1, 28, 28). Also the GAN generator."""

    def __init__(self, latent_dim: int, arch: str = "conv"):
        super().__init__()
        self.latent_dim, self.arch = latent_dim, arch
        if arch == "conv":
            self.net = nn.Sequential(
                nn.Linear(latent_dim, HIDDEN[arch]), nn.ReLU(),
                nn.Linear(HIDDEN[arch], 128 * 7 * 7), nn.ReLU(),
                nn.Unflatten(1, (128, 7, 7)),
                nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1),
            )
        elif arch == "mlp":
            self.net = nn.Sequential(
                nn.Linear(latent_dim, HIDDEN[arch]), nn.ReLU(),
                nn.Linear(HIDDEN[arch], 28 * 28), nn.Unflatten(1, (1, 28, 28)),
            )
        else:
            raise ValueError(f"unknown arch '{arch}' (choose from {', '.join(ARCHS)})")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def reparameterize(z_mean: torch.Tensor, z_log_var: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I): the sample is a differentiable function of (mean, log_var)."""
    eps = torch.randn(z_mean.shape, generator=generator, device=z_mean.device, dtype=z_mean.dtype)
    return z_mean + torch.exp(0.5 * z_log_var) * eps


def sample_without_trick(z_mean: torch.Tensor, z_log_var: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw z ~ N(mean, sigma^2) directly: no gradient reaches the encoder through this sample (P1Q1)."""
    with torch.no_grad():
        return reparameterize(z_mean, z_log_var, generator)


class VAE(nn.Module):
    def __init__(self, latent_dim: int = 16, arch: str = "conv"):
        super().__init__()
        self.latent_dim, self.arch = latent_dim, arch
        self.encoder = Encoder(latent_dim, arch)
        self.decoder = Decoder(latent_dim, arch)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (logits, z, z_mean, z_log_var)."""
        z_mean, z_log_var = self.encoder.encode(x)
        z = reparameterize(z_mean, z_log_var, generator)
        return self.decoder(z), z, z_mean, z_log_var


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def encode_means(encoder: Encoder, x: torch.Tensor, device: torch.device, batch_size: int = 500,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_mean`` and ``z_log_var`` (N, latent_dim) on the CPU for uint8 images ``x``, the encoder in eval mode
    (its own mode restored after)."""
    was_training = encoder.training
    encoder.eval()
    parts = [encoder.encode(xb) for xb in data.batches(x, batch_size, device=device)]
    encoder.train(was_training)
    return torch.cat([m for m, _ in parts]).float().cpu(), torch.cat([v for _, v in parts]).float().cpu()

