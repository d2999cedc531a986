"""Freed memory goes back to the OS when asked (core.memory), which is what --low-memory's
lower peak on CPU rests on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# A training step's pattern in small: a 2 MiB block freed first (glibc's threshold for giving
# memory back then rises above it), then 400 MiB of such blocks with small tensors alive between
# them, as saved activations are, then the blocks freed.
FREE_AFTER_A_STEP = """
import sys
import torch
from core.memory import return_freed_memory

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

applied = return_freed_memory() if sys.argv[1] == "on" else False
torch.ones(2**19)
blocks, held = [], []
for _ in range(200):
    blocks.append(torch.ones(2**19))
    held.append(torch.ones(16))
before = rss()
blocks.clear()
print(applied, before - rss())
"""


def _freed(mode: str) -> tuple[bool, int]:
    done = subprocess.run([sys.executable, "-c", FREE_AFTER_A_STEP, mode], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    applied, freed = done.stdout.split()
    return applied == "True", int(freed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_return_freed_memory_gives_freed_blocks_back_to_the_os():
    applied, freed = _freed("on")
    assert applied
    assert freed >= 0.9 * 200 * 2**21  # at least 360 of the 400 MiB freed
