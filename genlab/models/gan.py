"""The DCGAN of the lab's second part, built from the VAE's own pieces (nothing is copied):

- the generator *is* ``genlab.models.vae.Decoder``: noise z ~ N(0, I) of size ``latent_dim`` (the VAE prior)
  -> logits (B, 1, 28, 28); images are ``sigmoid(logits)`` in [0, 1], like the data. A trained VAE decoder's
  state dict therefore loads into it unchanged;
- the discriminator is ``genlab.models.vae.trunk(arch)`` (the encoder's feature extractor) followed by a single
  logit, so an ``Encoder.trunk`` state dict loads into ``Discriminator.trunk`` unchanged; with spectral
  normalisation (Miyato et al. 2018) every weight is divided by its largest singular value, which bounds how fast
  the discriminator's logit can change with its input and keeps it from outrunning the generator;
- ``FittedGenerator``: a generator behind a fixed ``LatentFit`` (z = mean + L·eps, a Gaussian fitted to a
  decoder's own codes), so noise eps ~ N(0, I) reaches the decoder distributed like the codes it was trained on
  (P2Q1's control ``ae_decoder_matched``).
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.models.vae import HIDDEN, Decoder, trunk

Generator = Decoder  # the same class: a VAE decoder is a GAN generator


def generate(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, 28, 28) in [0, 1] for noise ``z`` (B, latent_dim): the sigmoid of the decoder's logits."""
    return torch.sigmoid(generator(z))


# a latent dimension the codes never use has zero variance: this much of the mean variance keeps Cholesky defined
COV_JITTER = 1e-6


class LatentFit(nn.Module):
    """The fixed affine map eps -> mean + L·eps of a Gaussian N(mean, L Lᵀ): buffers only, so no optimiser moves
    them while ``state_dict`` (hence a checkpoint) carries them. Fresh, it is the identity."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim))

    @classmethod
    def of_codes(cls, codes: torch.Tensor) -> LatentFit:
        """The maximum-likelihood Gaussian of ``codes`` (N, latent_dim), N >= 2: their mean and the Cholesky
        factor of their covariance (computed in float64)."""
        codes = codes.detach().double().cpu()
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / len(codes)
        cov = cov + COV_JITTER * max(float(cov.diagonal().mean()), 1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype)
        fit = cls(codes.shape[1])
        fit.mean.copy_(mean.float())
        fit.scale_tril.copy_(torch.linalg.cholesky(cov).float())
        return fit

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.mean + eps @ self.scale_tril.T

    def summary(self) -> dict[str, float]:
        """``latent_fit_mean_norm`` (‖mean‖) and ``latent_fit_logdet`` (log det of the covariance; 0 for N(0, I))."""
        return {"latent_fit_mean_norm": float(self.mean.norm()),
                "latent_fit_logdet": float(2 * self.scale_tril.diagonal().abs().log().sum())}


class FittedGenerator(nn.Module):
    """Noise eps (B, latent_dim) -> ``decoder(latent_fit(eps))``: a generator whose input passes through a fixed
    LatentFit. Only the decoder has parameters, so only it trains."""

    def __init__(self, latent_fit: LatentFit, decoder: Decoder):
        super().__init__()
        self.latent_dim, self.arch = decoder.latent_dim, decoder.arch
        self.latent_fit, self.decoder = latent_fit, decoder

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.latent_fit(eps))

    @torch.no_grad()
    def folded(self) -> Decoder:
        """A plain Decoder computing the same function of eps: the affine map folded into the first Linear layer
        (W·(m + L·eps) + b = (W L)·eps + (W m + b)), so what loads a generator (``genlab sample``, the registry)
        needs to know nothing of the map."""
        plain = Decoder(self.latent_dim, self.arch).to(self.latent_fit.mean.device)
        plain.load_state_dict(self.decoder.state_dict())
        first = plain.net[0]
        weight = first.weight.clone()
        first.weight.copy_(weight @ self.latent_fit.scale_tril)
        first.bias.add_(weight @ self.latent_fit.mean)
        return plain


class Discriminator(nn.Module):
    """Image (B, 1, 28, 28) -> one logit per image (B,): log-odds that the image is real (the ``ns`` loss) or a
    score (``hinge``). ``spectral_norm=True`` normalises every layer from the start; ``use_spectral_norm()`` does
    it later, after plain weights (an encoder's trunk) were loaded."""

    def __init__(self, arch: str = "conv", spectral_norm: bool = False):
        super().__init__()
        self.arch, self.spectral_norm = arch, False
        self.trunk = trunk(arch)
        self.head = nn.Linear(HIDDEN[arch], 1)
        if spectral_norm:
            self.use_spectral_norm()

    def use_spectral_norm(self) -> Discriminator:
        """Reparameterise each Conv2d/Linear weight as W / sigma_max(W) (one power iteration per training forward
        pass; the state dict then holds ``...parametrizations.weight.original`` and the power-iteration vectors)."""
        if not self.spectral_norm:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(module)
            self.spectral_norm = True
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (B, HIDDEN[arch]): what a linear probe reads."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)
