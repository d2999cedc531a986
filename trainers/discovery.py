"""Find trainer backends through the ``loraforge.trainers`` entry-point group.

Built-in backends are registered the same way as third-party ones (see pyproject.toml), so the
built-ins prove the plugin path works. Discovery is explicit and cached: nothing is imported
until someone asks for the backends.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from trainers.errors import TrainerError
from trainers.protocol import TrainerBackend

GROUP = "loraforge.trainers"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


def _package(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "an unknown package"


def _load(ep: EntryPoint) -> TrainerBackend:
    where = f"trainer {ep.name!r} from package {_package(ep)!r} ({ep.value})"
    if not NAME_PATTERN.match(ep.name):
        raise TrainerError(f"{where}: names must be lowercase letters, digits, '-' or '_'; "
                           "rename the entry point")
    try:
        obj = ep.load()
        backend = obj() if isinstance(obj, type) else obj
    except Exception as exc:
        raise TrainerError(f"{where} failed to load: {exc}; reinstall or remove that package") \
            from exc
    problems = []
    if getattr(backend, "name", None) != ep.name:
        problems.append(f"its .name is {getattr(backend, 'name', None)!r}, not {ep.name!r}")
    config_class = getattr(backend, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        problems.append("its .config_class is not a dataclass")
    if not callable(getattr(backend, "train", None)):
        problems.append("it has no train() method")
    if problems:
        raise TrainerError(f"{where} does not fit the TrainerBackend protocol: "
                           + "; ".join(problems))
    return backend


@lru_cache(maxsize=1)
def discover_backends() -> dict[str, TrainerBackend]:
    """Every installed backend by name; call ``discover_backends.cache_clear()`` after installs."""
    found: dict[str, TrainerBackend] = {}
    owners: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            if owners[ep.name] == _package(ep):  # the same install seen twice on sys.path
                continue
            raise TrainerError(f"trainer {ep.name!r} is registered by both {owners[ep.name]!r} "
                               f"and {_package(ep)!r}; uninstall one of them")
        found[ep.name] = _load(ep)
        owners[ep.name] = _package(ep)
    return found


def backend_packages() -> dict[str, str]:
    """Which installed package registers each backend name."""
    return {ep.name: _package(ep) for ep in entry_points(group=GROUP)}


def get_backend(name: str) -> TrainerBackend:
    backends = discover_backends()
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none installed"
        raise TrainerError(f"unknown training method {name!r}; available: {known}")
    return backends[name]


def method_has_rank(name: str) -> bool:
    """Whether the method's config has an adapter rank (a full fine-tune has none)."""
    return "rank" in {f.name for f in dataclasses.fields(get_backend(name).config_class)}
