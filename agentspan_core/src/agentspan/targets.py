"""Targets (agents, graphs) named by ``"module:attr"`` strings, for the CLI's workers and the
testing kit's child processes."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from agentspan.errors import ConfigurationError


def load(spec: str, *, call_factory: bool = True) -> Any:
    """Imports the target named ``"package.module:attr"`` (``attr`` may be dotted).

    With ``call_factory``, when ``attr`` is a plain function, it is called without arguments and
    its result is the target (a factory such as ``def build_graph(): ...``).

    Raises:
        ConfigurationError: The name is malformed or cannot be imported.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"target {spec!r}: expected 'package.module:attribute'")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"target {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"target {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if call_factory and inspect.isfunction(value):
        value = value()
    return value
