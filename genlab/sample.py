"""``genlab sample``: images from a trained VAE decoder or GAN generator, without writing code.

The model is named by a run id (a ``train_vae`` or ``train_gan`` run) or a registered model
(``models:/genlab-vae@best``, ``models:/genlab-gan@best``, ``models:/NAME/VERSION``). The latent draws depend only
on ``seed``: the same command gives the same picture, and two models of one latent_dim get the same z.
"""

from __future__ import annotations

import os
from pathlib import Path

from genlab import files, tags
from genlab.checks import ConfigError, check, check_declared
from genlab.configs import MODEL_URI, RUN_ID, SampleConfig
from genlab.entries import Context, Result

LOGGED_MODEL = {tags.VAE: "decoder", tags.GAN: "generator"}  # the decoder each kind of run logs
INTERPOLATION_ROWS = 8


def validate(cfg: SampleConfig) -> None:
    """ConfigError (one line) before the store is opened or a file written."""
    check(bool(cfg.run) != bool(cfg.model), "run/model", (cfg.run, cfg.model), "exactly one of --run and --model")
    if cfg.run:
        check(bool(RUN_ID.match(cfg.run)), "run", cfg.run, "a 32-character run id")
    else:
        check(bool(MODEL_URI.match(cfg.model)), "model", cfg.model, "models:/NAME@ALIAS or models:/NAME/VERSION")
    check_declared(cfg)
    check(isinstance(cfg.interpolate, int) and (cfg.interpolate == 0 or 2 <= cfg.interpolate <= 64),
          "interpolate", cfg.interpolate, "0 (no interpolation) or an integer from 2 to 64")
    out = Path(cfg.out)
    check(out.suffix.lower() == ".png", "out", cfg.out, "a path ending in .png")
    parent = out.parent if str(out.parent) else Path(".")
    check(parent.is_dir() and os.access(parent, os.W_OK | os.X_OK), "out", cfg.out, "a file in a writable directory")
    check(not out.is_dir(), "out", cfg.out, "a file path, not a directory")


def load_decoder(cfg: SampleConfig):
    """The decoder (a ``genlab.models.vae.Decoder``) named by ``run`` or ``model``, on the CPU; ConfigError if
    the run or model does not exist or is not a finished VAE / GAN."""
    from genlab import tracking
    from genlab.models.vae import Decoder

    try:
        run_id = cfg.run or tracking.resolve_model_run(cfg.model)
        source = tracking.load_trained_run(run_id, LOGGED_MODEL)
    except tracking.TrackingError as e:
        raise ConfigError(str(e)) from None
    kind = source.data.tags[tags.KIND]
    params = source.data.params
    try:
        decoder = Decoder(int(params["latent_dim"]), params["arch"])
        state = (tracking.load_state_dict(cfg.model) if cfg.model
                 else tracking.logged_model_state_dict(run_id, LOGGED_MODEL[kind]))
        decoder.load_state_dict(state)
    except tracking.TrackingError as e:
        raise ConfigError(str(e)) from None
    except (KeyError, ValueError, RuntimeError):
        raise ConfigError(f"the model of run '{run_id}' is not a genlab decoder of its logged latent_dim/arch") from None
    return decoder


def run(cfg: SampleConfig, context: Context) -> Result:
    """Write the sample grid (and the interpolation strip); its lines are the files written. It makes no run of
    its own: under ``mlflow run . -e sample`` the pictures go to that run."""
    from genlab import pictures
    from genlab.checks import resolve_device

    validate(cfg)
    device = resolve_device(cfg.device)
    decoder = load_decoder(cfg).to(device)
    out = Path(cfg.out)
    written = [_write_png(pictures.sample_grid(decoder, decoder.latent_dim, cfg.n, cfg.nrow, cfg.seed), out)]
    if cfg.interpolate:
        ends = pictures.prior_z(2 * INTERPOLATION_ROWS, decoder.latent_dim, cfg.seed + 1)
        strip = pictures.interpolation_grid(decoder, ends[:INTERPOLATION_ROWS], ends[INTERPOLATION_ROWS:],
                                            steps=cfg.interpolate)
        written.append(_write_png(strip, out.with_name(f"{out.stem}_interpolation.png")))
    if os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run . -e sample`: that run keeps the pictures
        from genlab import tracking
        run = tracking.Run(os.environ["MLFLOW_RUN_ID"])
        for path in written:
            run.log_artifact(path)
    return Result(lines=tuple(str(path) for path in written))


def _write_png(grid, path: Path) -> Path:
    from PIL import Image

    with files.atomic_write(path) as f:
        Image.fromarray(grid).save(f, format="PNG")
    return path
