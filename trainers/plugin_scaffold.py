"""``loraforge plugin new NAME``: a trainer plugin package that installs and passes the kit.

The package it writes has a backend built on the shared SFT path (change ``peft_config`` to try
another PEFT method), the entry point that registers it, and a test running
``trainers.testing.check_backend`` against it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from trainers.discovery import NAME_PATTERN
from trainers.errors import TrainerError

console = Console()
plugin_app = typer.Typer(help="Write trainer plugins.", no_args_is_help=True)

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A LoRAForge trainer: {name}."
requires-python = ">=3.10"
dependencies = ["loraforge", "peft"]

[project.optional-dependencies]
test = ["pytest"]

# LoRAForge finds trainers through this group; NAME is what `--method NAME` selects.
[project.entry-points."loraforge.trainers"]
{name} = "{module}.backend:{cls}"

[tool.setuptools.packages.find]
include = ["{module}*"]
'''

BACKEND = '''"""The {name} trainer: LoRAForge's shared SFT path with its own adapter config."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainers.backends.sft import SftBackend
from trainers.config import LoraTrainConfig


@dataclass
class {cls}Config(LoraTrainConfig):
    """LoRA's settings plus this method's own; every field needs help text."""

    rank: int = field(default=4, metadata={{"help": "Adapter rank."}})


class {cls}(SftBackend):
    """{name}: replace peft_config (or another hook) with what your method changes."""

    name = "{name}"
    config_class = {cls}Config

    def peft_config(self, config: {cls}Config):
        from peft import LoraConfig

        return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=config.target_modules, task_type="CAUSAL_LM")
'''

TEST = '''"""The {name} trainer passes LoRAForge's conformance kit and is found by discovery."""

from importlib.metadata import entry_points

from trainers.testing import check_backend
from {module}.backend import {cls}


def test_{module}_passes_the_conformance_kit(tmp_path):
    result = check_backend({cls}(), tmp_path)
    assert result.metrics["trainable_params"] > 0


def test_{module}_is_registered_through_the_entry_point():
    names = {{ep.name for ep in entry_points(group="loraforge.trainers")}}
    assert "{name}" in names, "install the package first: pip install -e ."
'''

README = '''# {dist}

A LoRAForge trainer plugin adding `--method {name}`.

```
pip install -e .[test]          # registers the entry point
loraforge trainers list         # shows {name}
pytest                          # the conformance kit on a tiny model
loraforge train --method {name} --max-steps 50
```
'''


def _identifier(name: str) -> tuple[str, str]:
    module = "loraforge_" + re.sub(r"[^a-z0-9]", "_", name)
    cls = "".join(part.capitalize() for part in re.split(r"[^a-z0-9]", name) if part) + "Backend"
    return module, cls


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Write the package for trainer ``name`` into ``directory/loraforge-NAME``; returns it."""
    if not NAME_PATTERN.match(name):
        raise TrainerError(f"plugin name {name!r} must be lowercase letters, digits, '-' or '_', "
                           "starting with a letter")
    module, cls = _identifier(name)
    dist = f"loraforge-{name.replace('_', '-')}"
    root = directory / dist
    if root.exists():
        raise TrainerError(f"{root} exists; pick another name or directory")
    values = {"name": name, "module": module, "cls": cls, "dist": dist}
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / "README.md": README,
        root / module / "__init__.py": '"""LoRAForge trainer plugin {name}."""\n',
        root / module / "backend.py": BACKEND,
        root / "tests" / f"test_{module}.py": TEST,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return root


@plugin_app.command("new")
def plugin_new(
    name: str = typer.Argument(..., help="Trainer name, used as --method NAME (lowercase)."),
    directory: Annotated[Path, typer.Option(
        "--dir", help="Where to create the package.")] = Path("."),
) -> None:
    """Scaffold a trainer plugin package with its entry point and a conformance test."""
    root = scaffold_plugin(name, directory)
    console.print(f"wrote [bold]{root}[/]; next: cd {root} && pip install -e .[test] && pytest")
