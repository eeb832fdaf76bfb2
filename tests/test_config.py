"""Every entry point checks what its config's fields declare (configs.param: choices and bounds), both ways."""

import dataclasses
import math

import pytest
import torch

from genlab import configs
from genlab.checks import ConfigError, check_declared
from genlab.entries import ENTRIES

# a valid value for the fields whose defaults are placeholders (a run to point at, an output to write)
VALID = {"vae_run": "0" * 32, "gan_run": "0" * 32, "run": "0" * 32}


def declared(entry) -> list[tuple[str, object, object]]:
    """(field, a value just outside what it declares, one just inside) for each declared choice and bound."""
    cases = []
    for f in dataclasses.fields(entry.config):
        meta, step = f.metadata, 1 if f.type == "int" else 1e-9
        if meta.get("choices"):
            cases.append((f.name, "not-a-choice" if f.type == "str" else max(meta["choices"]) + 1,
                          meta["choices"][-1]))
        step_to = {"at_least": (-step, 0), "above": (0, step), "below": (0, -step), "at_most": (step, 0)}
        for bound, (out_by, in_by) in step_to.items():
            if bound in meta:
                cases.append((f.name, meta[bound] + out_by, meta[bound] + in_by))
    return cases


CASES = [(e, *case) for e in ENTRIES for case in declared(e)]


def valid(entry, tmp_path, **changes):
    names = {f.name for f in dataclasses.fields(entry.config)}
    base = {k: v for k, v in VALID.items() if k in names}
    if "out" in names and entry.name == "sample":
        base["out"] = str(tmp_path / "samples.png")
    if "out" in names and entry.name == "report":
        base["out"] = str(tmp_path / "report")
    if "output_dir" in names:
        base["output_dir"] = str(tmp_path)
    return entry.config(**{**base, **changes})


def test_every_entry_point_declares_its_bounds():
    # the fields that take a count or a rate declare what they allow, and the device choices are written once
    for entry in ENTRIES:
        for f in dataclasses.fields(entry.config):
            if f.name in ("epochs", "batch_size", "seed", "limit", "lr", "lr_g", "lr_d", "latent_dim", "workers"):
                assert set(configs.BOUNDS) & set(f.metadata) or entry.name == "search", (entry.name, f.name)
            if f.name == "device":
                assert f.metadata["choices"] is configs.DEVICES


@pytest.mark.parametrize("entry, name, outside, inside", CASES,
                         ids=[f"{e.name}.{n}={o}" for e, n, o, _ in CASES])
def test_validate_rejects_just_outside_a_declaration_and_accepts_just_inside(entry, name, outside, inside, tmp_path):
    with pytest.raises(ConfigError, match=rf"^{name} must be "):
        entry.validate(valid(entry, tmp_path, **{name: outside}))
    check_declared(valid(entry, tmp_path, **{name: inside}))  # the rest of validate may need a store or a GPU


def test_declared_types_are_strict():
    with pytest.raises(ConfigError, match="system_metrics must be one of 0, 1, got True"):
        check_declared(configs.VAEConfig(system_metrics=True))
    for bad in (math.nan, math.inf, "1e-3"):
        with pytest.raises(ConfigError, match="lr must be a finite number > 0"):
            check_declared(configs.VAEConfig(lr=bad))
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1, got 2.0"):
        check_declared(configs.VAEConfig(epochs=2.0))
    with pytest.raises(ConfigError, match=r"beta1 must be a finite number >= 0 and < 1, got 1"):
        check_declared(configs.GANConfig(beta1=1))


def test_one_redactor_hides_every_credential():
    assert configs.redacted("postgresql://genlab:s3cret@127.0.0.1:5432/optuna") == \
        "postgresql://genlab:***@127.0.0.1:5432/optuna"
    assert configs.redacted("https://TOKEN@mlflow.example.org") == "https://***@mlflow.example.org"
    assert configs.redacted("postgresql://genlab:@host/db") == "postgresql://genlab:***@host/db"
    for plain in ("sqlite:////work/mlflow.db", "http://127.0.0.1:5000", "postgresql://host/db"):
        assert configs.redacted(plain) == plain


def test_dtype_auto_is_bf16_only_where_the_cpu_has_native_bf16_units(tmp_path, monkeypatch):
    from genlab import checks

    cpu = torch.device("cpu")
    for flags, expected in (("fpu sse2 avx2 fma", "fp32"), ("fpu avx2 avx512f avx512_bf16", "bf16"),
                            ("fpu avx2 amx_tile amx_bf16", "bf16"), ("fpu avx512f avx512bw", "fp32")):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        monkeypatch.setattr(checks, "CPUINFO", info)
        checks.cpu_flags.cache_clear()
        assert checks.resolve_dtype("auto", cpu) == expected, flags
        # an explicit dtype is kept whatever the CPU has
        assert checks.resolve_dtype("fp32", cpu) == "fp32" and checks.resolve_dtype("bf16", cpu) == "bf16"
    monkeypatch.setattr(checks, "CPUINFO", tmp_path / "missing")
    checks.cpu_flags.cache_clear()
    assert checks.cpu_flags() == frozenset() and checks.resolve_dtype("auto", cpu) == "fp32"
    checks.cpu_flags.cache_clear()
