"""Naming a target so that another process can import it: ``"module:attr"`` strings."""

from __future__ import annotations

import sys
from typing import Any

from agentspan.errors import ConfigurationError
from agentspan.targets import load

__all__ = ["import_name", "load"]


def import_name(target: Any) -> str:
    """Returns the ``"module:attr"`` under which ``target`` can be imported by another process.

    Strings are returned as given. For an object, the imported modules are searched for a
    module-level name bound to it.

    Raises:
        ConfigurationError: The object is bound to no module-level name (or only in ``__main__``,
            which another process cannot import).
    """
    if isinstance(target, str):
        load_check = target.partition(":")
        if not load_check[1]:
            raise ConfigurationError(f"target {target!r}: expected 'package.module:attribute'")
        return target
    found: list[str] = []
    in_main = False
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        try:
            names = [name for name, value in list(namespace.items()) if value is target]
        except Exception:  # an exotic module object: skip it
            continue
        if not names:
            continue
        if module_name == "__main__":
            in_main = True
            continue
        found.extend(f"{module_name}:{name}" for name in names if not name.startswith("_"))
        found.extend(f"{module_name}:{name}" for name in names if name.startswith("_"))
    if found:
        return sorted(found, key=lambda spec: (spec.split(":")[1].startswith("_"), spec.count("."), spec))[0]
    where = " (it is defined in __main__, which a child process cannot import: move it into a module)" if in_main \
        else ""
    raise ConfigurationError(
        f"crash tests run the target in a child process, which must import it, but this "
        f"{type(target).__module__}.{type(target).__qualname__} object is not a module-level name of any "
        f"imported module{where}; pass it as 'package.module:attribute' (a module-level agent or graph, or a "
        "function that builds one)")
