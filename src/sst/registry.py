"""Registries of plug-ins chosen by name in a run config: training methods and tasks.

A registry maps ``name`` -> (config dataclass, implementation class). ``sst.methods`` and
``sst.tasks`` fill them when imported; ``sst.config`` reads them to parse the ``method`` and
``task`` sections. Nothing here imports those packages, so no import cycle can pass through.
"""

from __future__ import annotations

from typing import Any

from sst.schema import ConfigError


class Registry:
    """``name`` -> config dataclass (``configs``) and the class it configures (``classes``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.configs: dict[str, type] = {}
        self.classes: dict[str, type] = {}

    def register(self, name: str, config_cls: type, impl_cls: type) -> None:
        if name in self.configs and self.configs[name] is not config_cls:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.configs[name] = config_cls
        self.classes[name] = impl_cls

    def register_all(self, entries: list[tuple[str, type, type]]) -> None:
        """Register (name, config class, implementation class) triples in order."""
        for name, config_cls, impl_cls in entries:
            self.register(name, config_cls, impl_cls)

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self.configs)

    def config_class(self, name: str) -> type:
        if name not in self.configs:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {sorted(self.configs)}")
        return self.configs[name]

    def build(self, config: Any, *args: Any) -> Any:
        """An instance of the class registered under ``config.name``, built from ``config, *args``."""
        name = getattr(config, "name", None)
        if name not in self.classes:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {sorted(self.classes)}")
        return self.classes[name](config, *args)


METHODS = Registry("method")
TASKS = Registry("task")
