"""The feature classifier behind the sample-quality metrics (FID-proxy, KID-proxy, precision/recall, ...).

Inception features do not fit 28x28 grey images and need downloaded weights, so genlab trains this small CNN
(conv32 - conv64 - fc128 - fc10) on each data set's train split and measures samples in its 128-d penultimate
layer. ``forward`` returns class logits (one tensor, so it logs and serves as a plain MLflow model).
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_DIM = 128
N_CLASSES = 10


class Classifier(nn.Module):
    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.trunk = nn.Sequential(
            # stride-2 convolutions rather than conv + max-pool: 3x fewer multiply-adds for about the same
            # accuracy, so every run can afford its sample-quality metrics on CPU (fid_seconds_10k, docs/results.md)
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),    # 28 -> 14
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),   # 14 -> 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> the 128-d penultimate activations (B, 128), after the ReLU."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> class logits (B, n_classes)."""
        return self.head(self.dropout(self.trunk(x)))

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once (eval mode: dropout off), for the metrics."""
        h = self.trunk(x)
        return h, self.head(h)
