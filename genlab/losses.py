"""VAE loss terms, in nats per image (summed over the 784 pixels / the latent dimensions, mean over the batch), and
the GAN losses (nats per image, mean over the batch: ``ns``; hinge units: ``hinge``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def recon_nats(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood of grey values x in [0,1], per image (B,): BCE with logits summed."""
    return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)


def kl_per_dim(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, 1)) per image and latent dimension (B, D), in nats."""
    z_mean, z_log_var = z_mean.float(), z_log_var.float()
    return 0.5 * (z_mean.pow(2) + z_log_var.exp() - 1.0 - z_log_var)


def gaussian_log_prob(z: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """log q(z | x) for a diagonal Gaussian, per image (B,), in nats."""
    return (-0.5 * (z_log_var + (z - z_mean).pow(2) / z_log_var.exp() + torch.log(torch.tensor(2 * torch.pi)))
            ).sum(1)


def vae_terms(logits: torch.Tensor, x: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor,
              beta: float) -> dict[str, torch.Tensor]:
    """Per-image terms (B,): ``recon``, ``kl``, ``neg_elbo`` = recon + kl (unweighted bound), ``loss`` = recon + beta*kl."""
    recon = recon_nats(logits, x)
    kl = kl_per_dim(z_mean, z_log_var).sum(1)
    return {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "loss": recon + beta * kl}


def score_function_surrogate(recon: torch.Tensor, log_q: torch.Tensor, baseline: torch.Tensor | float,
                             ) -> torch.Tensor:
    """REINFORCE surrogate for the encoder gradient of E_q[recon] (per image, (B,)).

    Its gradient w.r.t. the encoder is (recon - baseline) * grad log q(z|x), with z drawn without the trick;
    ``recon`` itself still trains the decoder. The baseline reduces variance without adding bias.
    """
    return recon + (recon.detach() - baseline) * log_q


# ---------------------------------------------------------------- GAN

def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """ns: binary cross-entropy (real -> 1, fake -> 0); hinge: mean relu(1 - real) + mean relu(1 + fake)."""
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """ns: -log D(G(z)) (non-saturating); hinge: -mean logit."""
    if loss == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def iw_nll_nats(log_p_x_given_z: torch.Tensor, z: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor,
                ) -> torch.Tensor:
    """The importance-weighted bound on -log p(x) (Burda et al. 2016), per image (B,), in nats, from k posterior
    draws ``z`` (k, B, D) with their decoder log-likelihoods ``log_p_x_given_z`` (k, B): -log mean_k p(x|z) p(z) /
    q(z|x). One draw gives the neg-ELBO's single-sample estimate; the bound tightens as k grows."""
    k = z.shape[0]
    log_prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    log_q = torch.stack([gaussian_log_prob(z_k, z_mean, z_log_var) for z_k in z])
    return -(torch.logsumexp(log_p_x_given_z + log_prior - log_q, dim=0) - math.log(k))
