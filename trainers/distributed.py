"""Which process of a launch this is, and the few collectives run orchestration needs.

``accelerate launch`` and ``torchrun`` start one process per device and describe the launch
in the environment (RANK, WORLD_SIZE, LOCAL_RANK). A plain ``loraforge train`` has none of
them: then this module imports nothing from torch.distributed or accelerate, and every helper
is a no-op, so single-process runs are exactly what they were.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainers.errors import TrainerError


class LaunchStopped(TrainerError):
    """The launcher stopped this process: another process of the launch failed, or the
    launch itself was stopped."""


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def multi(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Launch:
    """This process's place in the launch, read from the launcher's environment."""
    try:
        return Launch(rank=int(os.environ.get("RANK", "0")),
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                      world_size=int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:  # a stray non-numeric variable is not a launch
        return Launch()


def is_main() -> bool:
    return current().is_main


def start() -> None:
    """Join the launch's process group (gloo on CPU, NCCL on GPUs) before the first collective;
    the Trainer reuses it."""
    if not current().multi:
        return
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # reads the launcher's environment; also what the Trainer will use
    if not current().is_main:  # one set of logs and bars per launch: the main process's
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if not dist.is_initialized():
        raise TrainerError("launched as one of several processes (WORLD_SIZE > 1), but no "
                           "process group could be joined; start with `accelerate launch "
                           "--multi_gpu` (also on CPU) or `torchrun`")


def finish() -> None:
    """Leave the launch's process group once the run is over on this process.

    A process that exits with its gloo group still open can abort in the group's C++ teardown
    ("terminate called without an active exception", SIGABRT), and the launcher then reports
    the whole launch as failed although the run was recorded."""
    if not current().multi:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # no process leaves while another still waits in the last broadcast
        dist.destroy_process_group()


def _device() -> Any:
    """Where object collectives stage their bytes: NCCL needs this process's GPU."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", current().local_rank) if dist.get_backend() == "nccl" else None


def share(value: Any) -> Any:
    """The main process's ``value``, on every process (a broadcast; picklable values)."""
    if not current().multi:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if not current().multi:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * current().world_size
    dist.all_gather_object(values, value)
    return values


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Under a launch, turn the launcher's SIGTERM (sent when another process fails) into
    ``LaunchStopped``, so the main process records its run as failed before it exits."""
    if not current().multi:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise LaunchStopped("stopped by the launcher (SIGTERM): another process of the launch "
                            "failed, or the launch was stopped; `loraforge train --resume` "
                            "under the same launch continues from the last checkpoint")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold off the launcher's SIGTERM while a failure is being recorded, so the record is not
    cut short; the launcher's SIGKILL after its grace period still ends the process."""
    if not current().multi:
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
