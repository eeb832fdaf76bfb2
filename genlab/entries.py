"""The entry points a study (and a study's worker process) can run: each one's module, run kind and config, and
how to call its ``main()`` the way its own command does."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.config import ConfigError
from genlab.configs import ENTRY_CONFIGS

# entry point -> (candidate modules, genlab.kind). The config class is genlab.configs.ENTRY_CONFIGS[entry].
ENTRIES: dict[str, tuple[tuple[str, ...], str]] = {
    "train_vae": (("genlab.train.vae",), "vae"),
    "train_gan": (("genlab.train.gan",), "gan"),
    "probe": (("genlab.probe", "genlab.train.probe"), "probe"),
    "gradvar": (("genlab.train.gradvar",), "gradvar"),
    "search": (("genlab.search",), "search"),
}

@dataclass
class Entry:
    name: str
    kind: str
    module: Any = None  # None: the module does not exist on this branch yet
    config_class: Any = None

    @property
    def available(self) -> bool:
        return self.module is not None

    def fields(self) -> dict[str, str]:
        return {f.name: f.type for f in dataclasses.fields(self.config_class)}


def load_entry(name: str) -> Entry:
    modules, kind = ENTRIES[name]
    package = Path(__file__).resolve().parent
    for module_name in modules:
        spec = importlib.util.find_spec(module_name)
        # only this checkout's modules (an editable install elsewhere can resolve names this tree lacks)
        if spec is not None and spec.origin and Path(spec.origin).resolve().is_relative_to(package):
            module = importlib.import_module(module_name)
            config_class = ENTRY_CONFIGS[name]
            # the class lives in genlab.configs (so that --help needs no torch); the module must still use it
            if getattr(module, config_class.__name__, None) is not config_class or not callable(
                    getattr(module, "main", None)):
                raise ConfigError(f"{module_name} must import {config_class.__name__} and define main() for entry "
                                  f"{name}")
            return Entry(name, kind, module, config_class)
    return Entry(name, kind)


def call_entry(entry: Entry, config: Any, tags: dict[str, str], splits_cache: dict) -> str:
    """Call the entry's main() the way its own command does; returns the run id."""
    from genlab import data, tracking

    main = entry.module.main
    accepted = inspect.signature(main).parameters
    kwargs: dict[str, Any] = {}
    if "tags" in accepted:
        kwargs["tags"] = tags
    if "splits" in accepted and hasattr(config, "dataset"):
        key = (config.dataset, getattr(config, "limit", 0))
        if key not in splits_cache:
            splits_cache[key] = data.load(*key)
        kwargs["splits"] = splits_cache[key]
    result = main(config, **kwargs)
    if isinstance(result, dict):  # the search returns its summary, with the parent run's id
        result = result.get("parent_run_id") or result.get("run_id")
    run_id = result[0] if isinstance(result, tuple) else result
    if not isinstance(run_id, str):
        raise RuntimeError(f"{entry.name}'s main() returned no run id")
    if "tags" not in accepted:
        tracking.set_run_tags(run_id, tags)
    return run_id
