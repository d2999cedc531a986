"""Giving freed memory back to the operating system at once, for a lower peak on CPU.

glibc's malloc serves a large request from its own mapping, and gives that mapping back when
the request is freed, only above a threshold. The threshold starts at 128 KiB and rises to the
size of every large block freed, up to 32 MiB. A training step allocates and frees thousands of
1–8 MiB activations, so after the first few the threshold sits above them: they come from the
heap, and the heap keeps what they leave behind. On SmolLM2 with LoRA that retained memory was
as large as the model itself (0.6 GB of a 1.5 GB peak; docs/paper_table.md). Fixing the
threshold keeps each large block in its own mapping. The cost is a page fault per page on
every fresh allocation: about a quarter slower per step there.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers, from glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, held fixed


def return_freed_memory() -> bool:
    """Serve every allocation of 128 KiB or more from its own mapping from now on, so memory
    freed by this process returns to the OS instead of staying in its heap.

    Applies to the whole process, including allocations torch makes. Returns False (and
    changes nothing) where the C library is not glibc, e.g. on macOS, Windows or musl.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded, the C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it: musl's mallopt is a no-op
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
