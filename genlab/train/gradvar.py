"""P1Q1 measured: how noisy is each gradient estimator of the reconstruction term, at fixed VAE parameters?

On ``n_batches`` fixed batches of validation images and fixed encoder/decoder parameters, draw ``n_samples`` noise
samples (spread over the batches) and, for each, the encoder gradient of the batch-mean reconstruction term
(nats/image) under
- the reparameterisation estimator: z = mean + sigma * eps, gradient through the decoder into the encoder; and the
  same averaged over MATCHED_SAMPLES draws (``reparam_matched``), as many decoder passes as the per-image baseline
  below costs, so that the comparison is at matched compute;
- the score-function (REINFORCE) estimator: z drawn without the trick, gradient (recon - b) * grad log q(z|x), with
  three baselines b: none, the batch-mean recon (``running_mean``: what ``estimator=score``'s moving average
  settles at) and a per-image b(x) from BASELINE_DRAWS independent draws made beforehand (no bias added).
All estimate the same gradient; their total variance (trace of the covariance over all encoder parameters) is the
answer, as ratios score / reparameterised with 95 % bootstrap intervals over blocks of draws. Without the trick the
reconstruction term sends no gradient to the encoder at all: ``encoder_grad_norm_no_trick`` is that norm (0 by
construction, a check of the code; whether a VAE can then be trained is measured by ``train_vae
--estimator detach``).

Read top to bottom: the moments -> the draws -> measure. The run around it is genlab.runs.gradvar.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab import losses
from genlab.models.vae import VAE, reparameterize, sample_without_trick

BASELINE_DRAWS = 16  # noise draws per image behind the score-function baseline b(x)
MATCHED_SAMPLES = 1 + BASELINE_DRAWS  # decoder passes per image of the per-image-baseline score estimator
BLOCK_DRAWS = 10  # draws per block: each block gives one unbiased variance, the unit of the bootstrap
BOOTSTRAP = 2000  # bootstrap resamples of the blocks for the ratios' intervals
ESTIMATORS = ("reparam", "reparam_matched", "score_no_baseline", "score_running_mean", "score_per_image")
# ratio name -> (numerator, denominator): each score-function baseline against the reparameterised estimator, and
# the per-image baseline against the reparameterised estimator averaged over as many decoder passes
RATIOS = {"no_baseline": ("score_no_baseline", "reparam"), "running_mean": ("score_running_mean", "reparam"),
          "per_image": ("score_per_image", "reparam"), "matched": ("score_per_image", "reparam_matched")}


# ---------------------------------------------------------------- measurement

class RunningMoments:
    """Mean and sum of squared deviations of flat vectors, merged chunk by chunk into float64 (Chan et al.'s
    parallel form of Welford: stable when the mean is much larger than the spread, no n x P matrix in memory)."""

    def __init__(self, size: int, chunk: int = 16):
        self.n, self.chunk, self.pending = 0, chunk, []
        self.mean = torch.zeros(size, dtype=torch.float64)
        self.m2 = torch.zeros(size, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        self.pending.append(x.detach().cpu())
        if len(self.pending) == self.chunk:
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        block = torch.stack(self.pending)  # float32: deviations within a block of 16 lose no significant digits
        self.pending = []
        k = len(block)
        block_mean = block.mean(0)
        block_m2 = block.sub_(block_mean).pow_(2).sum(0).double()
        block_mean = block_mean.double()
        delta = block_mean - self.mean
        total = self.n + k
        self.m2 += block_m2 + delta.pow(2) * (self.n * k / total)
        self.mean += delta * (k / total)
        self.n = total

    def variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance."""
        self._merge()
        return self.m2 / (self.n - 1)


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)])


def blocks(n_samples: int, n_batches: int) -> list[list[int]]:
    """For each batch, the sizes of its blocks of draws: ``n_samples`` spread evenly over the batches, each batch's
    draws cut into blocks of about BLOCK_DRAWS (never fewer than 2 draws: a block yields one unbiased variance)."""
    out = []
    for b in range(n_batches):
        draws = n_samples // n_batches + (b < n_samples % n_batches)
        k = max(1, draws // BLOCK_DRAWS)
        out.append([draws // k + (i < draws % k) for i in range(k)])
    return out


def pooled_ratio(num: np.ndarray, den: np.ndarray, dof: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Ratio of the pooled (degrees-of-freedom weighted) block variances ``num`` / ``den``, and its 95 % percentile
    bootstrap interval over blocks (the blocks are independent draws; a ratio of heavy-tailed variances has no
    useful normal interval)."""
    rng = np.random.default_rng(seed)
    ratio = float((dof * num).sum() / (dof * den).sum())
    pick = rng.integers(0, len(num), size=(BOOTSTRAP, len(num)))
    boot = (dof[pick] * num[pick]).sum(1) / (dof[pick] * den[pick]).sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return ratio, float(low), float(high)


def _draw(model: VAE, x: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor, baseline: torch.Tensor,
          params: list[torch.nn.Parameter], noise: torch.Generator) -> dict[str, torch.Tensor]:
    """One draw of each estimator's encoder gradient of the batch-mean reconstruction term (nats/image)."""
    def grad(scalar: torch.Tensor) -> torch.Tensor:
        return _flat(torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True), params)

    out = {"reparam": grad(losses.recon_nats(model.decoder(reparameterize(z_mean, z_log_var, noise)), x).mean())}
    m = MATCHED_SAMPLES  # as many decoder passes as the per-image baseline's score estimator spends
    z = reparameterize(z_mean.repeat(m, 1), z_log_var.repeat(m, 1), noise)
    out["reparam_matched"] = grad(losses.recon_nats(model.decoder(z), x.repeat(m, 1, 1, 1)).mean())
    z = sample_without_trick(z_mean, z_log_var, noise)
    with torch.no_grad():
        recon = losses.recon_nats(model.decoder(z), x)
    log_q = losses.gaussian_log_prob(z, z_mean, z_log_var)
    # score_function_surrogate's encoder gradient is (recon - b) * grad log q; its recon term has no encoder path.
    # running_mean: the scalar that estimator=score's moving average of the batch-mean recon settles at.
    for name, b in (("score_no_baseline", 0.0), ("score_running_mean", baseline.mean()), ("score_per_image", baseline)):
        out[name] = grad(losses.score_function_surrogate(recon, log_q, b).mean())
    return out


def _measure_batch(model: VAE, x: torch.Tensor, sizes: list[int], noise: torch.Generator,
                   params: list[torch.nn.Parameter]) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor], float]:
    """The per-coordinate variance of each estimator in each block of draws on batch ``x``; the sum of the
    estimators' mean gradients (for the bias check); the batch's mean recon under the baseline draws."""
    z_mean, z_log_var = model.encoder.encode(x)  # one encoder graph, reused by every draw (retain_graph)
    with torch.no_grad():  # b(x): independent draws, fixed before the measurement, so the estimator stays unbiased
        baseline = torch.stack([losses.recon_nats(model.decoder(sample_without_trick(z_mean, z_log_var, noise)), x)
                                for _ in range(BASELINE_DRAWS)]).mean(0)
    size = sum(p.numel() for p in params)
    variances, mean_sum = [], {k: torch.zeros(size, dtype=torch.float64) for k in ("reparam", "score_per_image")}
    for k in sizes:
        moments = {name: RunningMoments(size) for name in ESTIMATORS}
        for _ in range(k):
            for name, g in _draw(model, x, z_mean, z_log_var, baseline, params, noise).items():
                moments[name].add(g)
        variances.append({name: m.variance() for name, m in moments.items()})
        for name in mean_sum:
            mean_sum[name] += moments[name].mean * k
    return variances, mean_sum, float(baseline.mean())


def measure(model: VAE, batches: list[torch.Tensor], n_samples: int, seed: int) -> tuple[dict[str, float], dict]:
    """The gradient statistics of the reconstruction term on the image batches (each (B, 1, 28, 28) in [0, 1]).

    Returns (metrics, per-tensor variances {name: {estimator: v}}, pooled over blocks).
    """
    params = list(model.encoder.parameters())
    noise = torch.Generator(device=batches[0].device).manual_seed(seed)
    model.eval()
    plan = blocks(n_samples, len(batches))
    no_trick_norm = max(_no_trick_norm(model, x, params, noise) for x in batches)
    block_var, dof, sums, baseline_recon = [], [], None, []
    for x, sizes in zip(batches, plan, strict=True):
        variances, mean_sum, recon = _measure_batch(model, x, sizes, noise, params)
        block_var += variances
        dof += [k - 1 for k in sizes]
        sums = mean_sum if sums is None else {k: sums[k] + v for k, v in mean_sum.items()}
        baseline_recon.append(recon)
    dof_arr = np.asarray(dof, dtype=float)
    total = {name: np.array([float(v[name].sum()) for v in block_var]) for name in ESTIMATORS}
    pooled = {name: float((dof_arr * total[name]).sum() / dof_arr.sum()) for name in ESTIMATORS}
    metrics: dict[str, float] = {f"grad_variance_{name}": pooled[name] for name in ESTIMATORS}
    for ratio, (num, den) in RATIOS.items():
        value, low, high = pooled_ratio(total[num], total[den], dof_arr, seed)
        metrics.update({f"grad_variance_ratio_{ratio}": value, f"grad_variance_ratio_{ratio}_ci_low": low,
                        f"grad_variance_ratio_{ratio}_ci_high": high})
    mean_r, mean_s = sums["reparam"], sums["score_per_image"]
    metrics.update({
        "grad_mean_cosine": float(torch.dot(mean_r, mean_s) / (mean_r.norm() * mean_s.norm()).clamp_min(1e-300)),
        # the norm of the average reparameterised gradient: what the trick delivers, beside the 0 without it
        "encoder_grad_norm_reparam": float(mean_r.norm() / n_samples),
        "encoder_grad_norm_no_trick": no_trick_norm, "baseline_recon": float(np.mean(baseline_recon)),
        "grad_variance_blocks": len(dof), "decoder_passes_per_image_score_per_image": MATCHED_SAMPLES,
        "encoder_param_count": sum(p.numel() for p in params)})
    return metrics, _per_tensor(model, block_var, dof_arr)


def _no_trick_norm(model: VAE, x: torch.Tensor, params: list[torch.nn.Parameter], noise: torch.Generator) -> float:
    """The encoder gradient norm of the reconstruction term when z is drawn without the trick: exactly absent."""
    z_mean, z_log_var = model.encoder.encode(x)
    recon = losses.recon_nats(model.decoder(sample_without_trick(z_mean, z_log_var, noise)), x).mean()
    return float(_flat(torch.autograd.grad(recon, params, allow_unused=True), params).norm())


def _per_tensor(model: VAE, block_var: list[dict[str, torch.Tensor]], dof: np.ndarray) -> dict[str, dict[str, float]]:
    """Each encoder tensor's pooled total variance per estimator: where the noise sits."""
    weights = dof / dof.sum()
    out, offset = {}, 0
    for name, p in model.encoder.named_parameters():
        part = slice(offset, offset + p.numel())
        out[name] = {est: float(sum(w * float(v[est][part].sum()) for w, v in zip(weights, block_var, strict=True)))
                     for est in ESTIMATORS}
        offset += p.numel()
    return out


