"""Shared plumbing for the entry points: validation errors and helpers used by every training config."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import torch

from genlab.configs import BOUNDS


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


def check_declared(cfg: Any) -> None:
    """What each field of a config dataclass declares it allows (configs.param): its choices (of the same type:
    1 is not "1", True is not 1) and its bounds, field by field; every entry point's validate() starts here and
    adds only what a declaration cannot say (one field against another, a pattern, a path)."""
    for f in dataclasses.fields(cfg):
        meta, value = f.metadata, getattr(cfg, f.name)
        if meta.get("choices"):
            same_type = all(type(c) is type(value) for c in meta["choices"])
            check(same_type and value in meta["choices"], f.name, value,
                  f"one of {', '.join(map(str, meta['choices']))}")
        bounds = {k: meta[k] for k in BOUNDS if k in meta}
        if bounds:
            check(_within(value, f.type, bounds), f.name, value, _allowed(f.type, bounds))


def _within(value: Any, kind: str, bounds: dict[str, float]) -> bool:
    number = isinstance(value, int) if kind == "int" else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not number:
        return False
    return (value >= bounds.get("at_least", -math.inf) and value > bounds.get("above", -math.inf)
            and value < bounds.get("below", math.inf) and value <= bounds.get("at_most", math.inf))


def _allowed(kind: str, bounds: dict[str, float]) -> str:
    """``an integer >= 1``, ``a finite number > 0``, ``a finite number >= 0 and < 1``, ..."""
    signs = {"at_least": ">=", "above": ">", "below": "<", "at_most": "<="}
    noun = "an integer" if kind == "int" else "a finite number"
    return f"{noun} " + " and ".join(f"{signs[k]} {bounds[k]:g}" for k in BOUNDS if k in bounds)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device must be auto or cpu here: cuda is not available")
    return torch.device(device)


# CPU flags (Linux /proc/cpuinfo) of matrix units that compute in bf16 natively: without them autocast bf16 is
# emulated and several times slower than fp32 (docs/results.md, "Notes moved from the code").
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read: not Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    return frozenset(word for line in text.splitlines() if line.startswith("flags") for word in line.split()[2:])


def has_native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products run on dedicated units: a CUDA device that supports bf16, a CPU with AMX-BF16
    or AVX512-BF16."""
    if device.type == "cuda":  # emulated bf16 (pre-Ampere GPUs) is slower than fp32: not native
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The compute dtype a run trains in: ``auto`` is bf16 (autocast) where the device has native bf16 units, fp32
    elsewhere; ``fp32`` and ``bf16`` are kept as asked. Logged as the param ``compute_dtype``."""
    if dtype == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    return dtype


def trained_dtype(params: dict[str, str]) -> dict[str, str]:
    """``dtype`` as a run trained: its logged ``compute_dtype`` (what ``auto`` resolved to where it ran, so a
    resumed run keeps its precision on another machine), fp32 for a run logged before ``dtype`` existed."""
    return {"dtype": params.get("compute_dtype") or params.get("dtype") or "fp32"}


def config_from_params(config_class: type, params: dict[str, str]) -> Any:
    """Rebuild a config dataclass from a run's logged params (strings); fields absent there keep their default."""
    casts = {"int": int, "float": float, "str": str}
    return config_class(**{f.name: casts[f.type](params[f.name])
                           for f in dataclasses.fields(config_class) if f.name in params})


def check_batch_fits(batch_size: int, n_images: int) -> None:
    if batch_size > n_images:
        raise ConfigError(f"batch_size must be <= the {n_images} training images, got {batch_size}")
