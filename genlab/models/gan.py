"""The DCGAN of the lab's second part, built from the VAE's own pieces (nothing is copied):

- the generator *is* ``genlab.models.vae.Decoder``: noise z ~ N(0, I) of size ``latent_dim`` (the VAE prior)
  -> logits (B, 1, 28, 28); images are ``sigmoid(logits)`` in [0, 1], like the data. A trained VAE decoder's
  state dict therefore loads into it unchanged;
- the discriminator is ``genlab.models.vae.trunk(arch)`` (the encoder's feature extractor) followed by a single
  logit, so an ``Encoder.trunk`` state dict loads into ``Discriminator.trunk`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.models.vae import HIDDEN, Decoder, trunk

Generator = Decoder  # the same class: a VAE decoder is a GAN generator


def generate(generator: Decoder, z: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, 28, 28) in [0, 1] for noise ``z`` (B, latent_dim): the sigmoid of the decoder's logits."""
    return torch.sigmoid(generator(z))


class Discriminator(nn.Module):
    """Image (B, 1, 28, 28) -> one logit per image (B,): log-odds that the image is real."""

    def __init__(self, arch: str = "conv"):
        super().__init__()
        self.arch = arch
        self.trunk = trunk(arch)
        self.head = nn.Linear(HIDDEN[arch], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (B, HIDDEN[arch]): what a linear probe reads."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)
