"""The loops' shared seam (genlab/train/loop.py): what a sink sees, checkpoints and resume without tracking, one
NonFiniteLoss for both loops."""

import copy
import math

import pytest
import torch

from genlab import data
from genlab.checks import ConfigError
from genlab.configs import GANConfig, VAEConfig
from genlab.train import gan, loop, vae


class RecordingSink:
    """A sink that keeps what the loop hands it."""

    def __init__(self):
        self.started, self.epochs, self.checkpoints, self.ended = 0, [], [], None

    def start(self, model, metrics):
        self.started += 1

    def epoch(self, epoch, metrics, model, checkpoint):
        self.epochs.append((epoch, dict(metrics)))
        self.checkpoints.append(copy.deepcopy(checkpoint()))  # live tensors: copy them now, as saving does

    def end(self, model, final):
        self.ended = dict(final)
        return {"added_by_sink": 1.0}


SAME_EVERY_RUN = ("epoch_seconds", "images_per_second", "eval_seconds", "nll_seconds")  # wall-clock metrics


def numbers(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in SAME_EVERY_RUN}


@pytest.fixture(scope="module")
def splits():
    return data.load("synthetic", limit=192)


def vae_cfg(**kw) -> VAEConfig:
    return VAEConfig(**{**dict(dataset="synthetic", epochs=2, limit=192, batch_size=64, latent_dim=3,
                               eval_samples=0, nll_images=50, lr_schedule="cosine"), **kw})


def gan_cfg(**kw) -> GANConfig:
    return GANConfig(**{**dict(dataset="synthetic", epochs=2, limit=192, batch_size=64, latent_dim=3,
                               eval_samples=0), **kw})


def test_the_vae_loop_reports_each_epoch_and_a_checkpoint_it_can_resume_from(splits):
    sink = RecordingSink()
    _, final = vae.train(vae_cfg(), splits, sink)
    assert sink.started == 1 and [e for e, _ in sink.epochs] == [1, 2]
    assert sink.ended is not None and final["added_by_sink"] == 1.0 and "added_by_sink" not in sink.ended
    assert {"test_neg_elbo", "train_eval_neg_elbo", "val_neg_elbo"} <= set(sink.ended)
    first = sink.checkpoints[0]
    assert set(first) == vae.CHECKPOINT_KEYS | {"val_history"} and first["epoch"] == 1 and first["config"]["latent_dim"] == 3
    # the sink does not change the numbers: the untracked run gives the same
    _, untracked = vae.train(vae_cfg(), splits)
    assert numbers(untracked) == numbers({k: v for k, v in final.items() if k != "added_by_sink"})
    # resume from epoch 1: no step-0 report, epoch 2 only, the same end as the uninterrupted run
    resumed_sink = RecordingSink()
    _, resumed = vae.train(vae_cfg(), splits, resumed_sink, resume=first)
    assert resumed_sink.started == 0 and [e for e, _ in resumed_sink.epochs] == [2]
    for key in ("test_neg_elbo", "val_neg_elbo", "train_neg_elbo", "lr_effective"):
        assert math.isclose(resumed[key], final[key], rel_tol=1e-5), key


def test_the_gan_loop_reports_both_networks_and_resumes(splits):
    sink = RecordingSink()
    nets, final = gan.train(gan_cfg(), splits, sink)
    assert isinstance(nets.generator, gan.Generator) and isinstance(nets.discriminator, gan.Discriminator)
    assert sink.started == 1 and [e for e, _ in sink.epochs] == [1, 2]
    first = sink.checkpoints[0]
    assert set(first) == gan.CHECKPOINT_KEYS | {"val_history", "generator_ema"} and first["epoch"] == 1
    resumed_sink = RecordingSink()
    _, resumed = gan.train(gan_cfg(), splits, resumed_sink, resume=sink.checkpoints[0])
    assert resumed_sink.started == 0 and [e for e, _ in resumed_sink.epochs] == [2]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "sample_diversity"):
        assert math.isclose(resumed[key], final[key], rel_tol=1e-5), key


def test_a_sink_that_raises_stops_the_loop(splits):
    class Prune(loop.NullSink):
        def epoch(self, epoch, metrics, model, checkpoint):
            raise RuntimeError(f"pruned at {epoch}")

    with pytest.raises(RuntimeError, match="pruned at 1"):
        vae.train(vae_cfg(), splits, Prune())


# An absurd learning rate makes NaN show first in the loss computed through the network that took the absurd
# step, so each GAN case reaches the other network's check: D's step at lr_d turns the generator loss (read
# through D) NaN at step 0; G's step at lr_g turns the discriminator loss on the next fakes NaN at step 1. The
# hint names the update before the check, hence the culprit's rate, not the checked network's.
AT_EPOCH_1 = r"became (nan|-?inf) at epoch 1, step \d+"
NON_FINITE = {
    "vae lr": (vae, dict(lr=1e30), rf"VAE loss {AT_EPOCH_1} \(lr=1e\+30 may be too large\)"),
    "gan lr_d": (gan, dict(lr_d=1e30),
                 rf"generator loss {AT_EPOCH_1} \(after the discriminator's update: lr_d=1e\+30 may be too large\)"),
    "gan lr_g": (gan, dict(lr_g=1e30),
                 rf"discriminator loss {AT_EPOCH_1} \(after the generator's update: lr_g=1e\+30 may be too large\)"),
}


@pytest.mark.parametrize("case", NON_FINITE)
def test_both_loops_raise_the_one_non_finite_loss(splits, case):
    """Both loops, and both of the GAN's checks (discriminator and generator loss), raise loop.NonFiniteLoss
    naming the loss, the epoch, the step and a learning rate."""
    module, absurd, message = NON_FINITE[case]
    cfg = (vae_cfg if module is vae else gan_cfg)(epochs=1, **absurd)
    with pytest.raises(loop.NonFiniteLoss, match=f"^{message}"):
        module.train(cfg, splits)


def test_checkpoint_file_round_trips_and_load_checkpoint_refuses_other_files(tmp_path):
    model = torch.nn.Linear(2, 1)
    rng = torch.Generator().manual_seed(3)
    state = loop.checkpoint_state(4, vae_cfg(), {"model": model}, {"shuffle_rng": rng}, baseline=torch.tensor(0.5))
    with loop.checkpoint_file(state) as path:
        assert path.name == "last.pt"
        loaded = loop.load_checkpoint(path, {"model", "shuffle_rng", "baseline", "epoch", "config"}, "test")
        with pytest.raises(ConfigError, match="is not a genlab VAE checkpoint"):
            loop.load_checkpoint(path, vae.CHECKPOINT_KEYS, "VAE")
    assert not path.exists()
    other, other_rng = torch.nn.Linear(2, 1), torch.Generator()
    assert loop.restore(loaded, {"model": other}, {"shuffle_rng": other_rng}) == 5
    assert torch.equal(other.weight, model.weight) and torch.equal(other_rng.get_state(), rng.get_state())
    assert loop.restore(None, {"model": other}, {}) == 1
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="is unreadable"):
        loop.load_checkpoint(tmp_path / "bad.pt", vae.CHECKPOINT_KEYS, "VAE")


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert loop.progress(10, "epoch 1/2") is None
