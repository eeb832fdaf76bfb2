"""Pictures of a decoder (a VAE decoder or a GAN generator): prior samples, straight lines in the latent space,
the 2-d latent manifold. Latent draws depend only on a seed, so the same seed gives the same z in every run of a
latent_dim: pictures of different runs compare cell by cell. Output: uint8 grids, made with numpy alone (no
torchvision): ``grid`` and ``side_by_side``.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_SEED = 1234  # the prior draws behind every samples grid: the same images across epochs, runs and models
N_GRID = 64
INTERPOLATION_STEPS = 10  # images per line, both ends included
INTERPOLATION_PAIRS = 6
MANIFOLD_SIDE = 15


def grid(images: torch.Tensor | np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) floats in [0, 1] -> uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad), white gaps."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32).reshape(len(images), *np.shape(images)[-2:])
    n, h, w = images.shape
    rows = -(-n // nrow)
    out = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def side_by_side(originals: torch.Tensor, reconstructions: torch.Tensor, nrow: int = 8) -> np.ndarray:
    """Rows alternate: a row of originals, then the same images reconstructed (a short last row is filled with
    white, so that a reconstruction always sits under its original)."""
    pairs = []
    for start in range(0, len(originals), nrow):
        for part in (originals[start:start + nrow], reconstructions[start:start + nrow]):
            blank = torch.ones(nrow - len(part), *part.shape[1:], dtype=part.dtype)
            pairs.append(torch.cat([part.cpu(), blank]))
    return grid(torch.cat(pairs), nrow=nrow)


def prior_z(n: int, latent_dim: int, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """``n`` draws z ~ N(0, I) (n, latent_dim) that depend only on ``seed``."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def decode(decoder: torch.nn.Module, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images (n, 1, 28, 28) in [0, 1], on the CPU: the sigmoid of the decoder's logits, in eval mode."""
    device = next(decoder.parameters()).device
    was_training = decoder.training
    decoder.eval()
    out = torch.cat([torch.sigmoid(decoder(zb.to(device))).float().cpu() for zb in z.split(batch_size)])
    decoder.train(was_training)
    return out


def lines(z_from: torch.Tensor, z_to: torch.Tensor, steps: int = INTERPOLATION_STEPS) -> torch.Tensor:
    """Points evenly spaced on the segments z_from[i] -> z_to[i], ends included: (pairs * steps, latent_dim),
    one segment after the other."""
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (z_from.unsqueeze(1) * (1 - t) + z_to.unsqueeze(1) * t).reshape(-1, z_from.shape[1])


def manifold_z(side: int = MANIFOLD_SIDE) -> torch.Tensor:
    """A side x side grid of 2-d codes at evenly spaced quantiles of N(0, 1) (Kingma & Welling's figure 4):
    equal prior mass between neighbours, rows from top (z[1] high) to bottom, columns left to right."""
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side))
    rows, cols = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1)


def sample_grid(decoder: torch.nn.Module, latent_dim: int, n: int = N_GRID, nrow: int = 8,
                seed: int = SAMPLE_SEED) -> np.ndarray:
    """A grid of ``n`` decoded prior draws."""
    return grid(decode(decoder, prior_z(n, latent_dim, seed)), nrow=nrow)


def interpolation_grid(decoder: torch.nn.Module, z_from: torch.Tensor, z_to: torch.Tensor,
                       steps: int = INTERPOLATION_STEPS) -> np.ndarray:
    """One row per pair: the decoded points of the straight line between its two codes."""
    return grid(decode(decoder, lines(z_from, z_to, steps)), nrow=steps)


def manifold_grid(decoder: torch.nn.Module, side: int = MANIFOLD_SIDE) -> np.ndarray:
    """The decoded 2-d latent manifold (only for latent_dim 2)."""
    return grid(decode(decoder, manifold_z(side)), nrow=side, pad=0)


def pair_indices(labels: np.ndarray, n_pairs: int = INTERPOLATION_PAIRS) -> tuple[list[int], list[int]]:
    """Indices of ``n_pairs`` image pairs of different classes: the first image of class k with the first of class
    k + 1 (k = 0, 1, ...), so every run of a data set interpolates between the same test images."""
    labels = np.asarray(labels)
    first = {int(c): int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)}
    classes = sorted(first)
    if len(classes) < 2:  # one class: consecutive images instead
        n = min(n_pairs, len(labels) // 2)
        return list(range(0, 2 * n, 2)), list(range(1, 2 * n, 2))
    pairs = [(first[classes[k % len(classes)]], first[classes[(k + 1) % len(classes)]]) for k in range(n_pairs)]
    return [a for a, _ in pairs], [b for _, b in pairs]
