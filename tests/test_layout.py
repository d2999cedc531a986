"""The packages import each other in one direction only (README, Layout): no cycles; core
imports none of them, and the store only core."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "core": set(),
    "registry": {"core"},
    "crawlers": {"core", "registry"},
    "curation": {"core", "registry"},
    "trainers": {"core", "registry", "curation"},
    "publishing": {"core", "registry", "trainers"},
    "serving": {"core", "registry", "trainers"},
    "ui": {"core", "registry", "trainers", "publishing", "serving"},
    "loraforge": {"core", "registry", "crawlers", "curation", "trainers", "publishing", "serving",
                  "ui"},
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+([a-z_]+)", re.MULTILINE)


def test_each_package_imports_only_the_packages_below_it():
    found: dict[str, set[str]] = {}
    for package in ALLOWED:
        for source in (REPO_ROOT / package).rglob("*.py"):
            for name in IMPORT.findall(source.read_text(encoding="utf-8")):
                if name in ALLOWED and name != package:
                    found.setdefault(package, set()).add(name)
    wrong = {p: sorted(found.get(p, set()) - allowed) for p, allowed in ALLOWED.items()}
    assert not any(wrong.values()), wrong
