"""Shared plumbing for the entry points: validation errors and helpers used by every training config."""

from __future__ import annotations

import math
from typing import Any

import torch


class ConfigError(ValueError):
    """An invalid parameter: one line naming it and the allowed values (exit code 2)."""


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> None:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, name, value,
          f"an integer >= {minimum}")


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    check(ok, name, value, "a finite number >= 0" if allow_zero else "a finite number > 0")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, name, value, f"one of {', '.join(choices)}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device must be auto or cpu here: cuda is not available")
    return torch.device(device)


def config_from_params(config_class: type, params: dict[str, str]) -> Any:
    """Rebuild a config dataclass from a run's logged params (strings); fields absent there keep their default."""
    import dataclasses

    casts = {"int": int, "float": float, "str": str}
    return config_class(**{f.name: casts[f.type](params[f.name])
                           for f in dataclasses.fields(config_class) if f.name in params})


def check_batch_fits(batch_size: int, n_images: int) -> None:
    if batch_size > n_images:
        raise ConfigError(f"batch_size must be <= the {n_images} training images, got {batch_size}")
