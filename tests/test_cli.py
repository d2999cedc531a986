"""The console script as a user runs it: a real subprocess, a real store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = ["db", "crawl", "data", "base", "train", "trainers", "plugin", "adapters", "hub", "ui",
          "demo"]


def run_cli(*args: str, home: Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAFORGE_HOME": str(home)}
    env.pop("LORAFORGE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "loraforge", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def listed_commands(help_text: str) -> set[str]:
    """The names in the first column of the help's Commands box (not words in descriptions)."""
    box = help_text.split("Commands", 1)[1]
    return set(re.findall(r"^│ ([a-z][a-z-]*) ", box, flags=re.MULTILINE))


def test_help_lists_every_command_group(tmp_path: Path) -> None:
    result = run_cli("--help", home=tmp_path)
    assert result.returncode == 0
    assert listed_commands(result.stdout) == {*GROUPS, "eval", "demo-site", "serve"}


def test_the_cli_loads_without_the_heavy_libraries(tmp_path: Path) -> None:
    # `loraforge --help`, `db`, `crawl`, `adapters list` took 17 s of a core while the CLI
    # imported torch, transformers, peft and gradio for the commands that need them; they load
    # in those commands now. This keeps a new import at the top of a CLI module from undoing it.
    heavy = ("torch", "transformers", "peft", "trl", "gradio", "sentence_transformers")
    probe = f"import sys, loraforge.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "LORAFORGE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ctrl_c_stops_a_command_started_with_sigint_ignored(tmp_path: Path) -> None:
    # A CI script's background job (or `loraforge ui &`) starts with SIGINT ignored; a job's
    # Cancel is SIGINT, and a training that ignored it ran on and was recorded as succeeded.
    import signal

    env = {**os.environ, "LORAFORGE_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loraforge", "demo-site", "serve", "--port", "0"], cwd=REPO_ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "demo site at http://127.0.0.1:" in first, first
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]  # ignored, it would serve on: TimeoutExpired
    finally:
        proc.kill()
    # "stopped" and 0 when the signal lands in the serving loop; 130 ("interrupted") when it
    # lands a moment earlier, between the first line and the loop.
    outcome = (proc.returncode, "stopped" in rest)
    assert outcome in ((0, True), (130, False)), (proc.returncode, rest)
    assert "Traceback" not in rest


def test_db_upgrade_creates_a_fresh_sqlite_store(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", home=tmp_path)
    assert result.returncode == 0, result.stderr
    tables = inspect(create_engine(f"sqlite:///{tmp_path / 'loraforge.db'}")).get_table_names()
    assert "adapters" in tables and "alembic_version" in tables


def test_alembic_cli_upgrades_a_fresh_store_from_the_repo_root(tmp_path: Path) -> None:
    env = {**os.environ, "LORAFORGE_HOME": str(tmp_path)}
    alembic = Path(sys.executable).parent / "alembic"
    for args in (["upgrade", "head"], ["check"]):
        result = subprocess.run([str(alembic), *args], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "loraforge.db").exists()


def test_unmigrated_store_gives_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("adapters", "list", home=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "loraforge db upgrade" in lines[0]
    assert "Traceback" not in result.stderr
