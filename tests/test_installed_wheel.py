"""The built wheel, installed into a fresh virtualenv in a temp folder, away from the checkout.

A user who runs ``pip install loraforge`` has no alembic/ folder, no scrapy.cfg and no repo
beside them: the store must migrate, a crawl must run, a snapshot build and a training must
work from wherever they stand. Nothing is downloaded: the venv reads the test environment's
dependencies through one .pth line, and only LoRAForge itself comes from the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crawlers.demo_site import serve

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(python: Path, args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked, or new and not ignored), copied away, so building
    the wheel writes nothing into the checkout and uses nothing a clone lacks."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                            check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO_ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def test_the_wheel_outside_the_checkout_migrates_crawls_builds_and_trains(tmp_path: Path):
    wheels, source = tmp_path / "wheels", _source_copy(tmp_path / "source")
    _run(Path(sys.executable), ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(wheels), str(source)], tmp_path, dict(os.environ))
    [wheel] = wheels.glob("loraforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"registry/alembic/env.py", "registry/alembic/script.py.mako"} <= names
    assert any(n.startswith("registry/alembic/versions/0003") for n in names)
    assert any(n.startswith("crawlers/demo_site/templates/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    [venv_site] = venv.glob("lib/python*/site-packages")
    # --target, not --prefix: pip would otherwise uninstall the checkout's editable install
    # from the environment running this test.
    _run(Path(sys.executable), ["-m", "pip", "install", "--no-deps", "--no-index", "-q",
                                "--target", str(venv_site), str(wheel)], tmp_path,
         dict(os.environ))
    # Dependencies from this environment. A .pth line adds a folder but runs none of its .pth
    # files, so the checkout's editable install stays out; the example plugin installed beside
    # it (an editable install too) is added by its folder.
    (venv_site / "test-deps.pth").write_text("\n".join(
        [*site.getsitepackages(), str(REPO_ROOT / "examples" / "loraforge-ia3")]) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LORAFORGE_DATABASE_URL", "VIRTUAL_ENV")}
    env.update(LORAFORGE_HOME=str(tmp_path / "home"), COLUMNS="200")
    where = _run(python, ["-c", "import registry, crawlers, loraforge; "
                                "print(registry.__file__, crawlers.__file__)"], work, env)
    assert all(Path(p).is_relative_to(venv_site) for p in where.split()), where

    assert "7d2a9c4e1f60" in _run(python, ["-m", "loraforge", "db", "upgrade"], work, env)
    with serve(per_collection=3) as base_url:
        _run(python, ["-m", "loraforge", "crawl", "qa", "--sitemap", f"{base_url}/sitemap.xml"],
             work, env)
    _run(python, ["-m", "loraforge", "data", "build", "--name", "snap", "--clusters", "0",
                  "--test-fraction", "0.2"], work, env)
    _run(python, ["-m", "loraforge", "base", "init", "--steps", "5", "--hidden-size", "32",
                  "--layers", "1", "--vocab-size", "300", "--seq-len", "64"], work, env)
    _run(python, ["-m", "loraforge", "train", "--method", "lora", "--base", "tiny",
                  "--dataset", "snap", "--name", "wheel-lora", "--max-steps", "2",
                  "--max-length", "64", "--set", "generate_examples=0",
                  "--set", "progress_bar=false"], work, env)
    listed = _run(python, ["-m", "loraforge", "adapters", "list"], work, env)
    assert "wheel-lora:v1" in listed
    assert not any(work.iterdir()), "commands wrote into the directory they were run from"
