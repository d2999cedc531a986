"""Ship the Alembic migrations inside the wheel (as ``registry/alembic``).

They stay in the repo's top-level ``alembic/`` folder, where ``alembic upgrade head`` from the
repo root finds them through alembic.ini; an installed LoRAForge finds its own copy instead
(``registry.db.ALEMBIC_DIR``). Everything else about the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the repo's alembic/ in place
            return
        target = Path(self.build_lib) / "registry" / "alembic"
        shutil.copytree(Path(__file__).parent / "alembic", target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithMigrations})
