"""Stopping cleanly: SIGTERM / Ctrl-C at a step boundary, and known fatal faults in one line.

A long command (`vt train`, `vt study`) runs inside `graceful_stop()`: the first SIGINT or SIGTERM
only sets a flag; the training loop checks it after each optimizer step (`check_stop`), writes a
step-boundary checkpoint (`save_interrupted`: `last.pt` with `"step"` = batches done in the
interrupted epoch) and raises `StopRequested`; the CLI prints one line and exits 128 + signal
(130 for Ctrl-C, 143 for SIGTERM). A second signal stops at once (KeyboardInterrupt). Commands
without step boundaries (`vt embed`) use `graceful_stop(defer=False)`: the signal raises at once.

`train.resume=auto` then restores the model, optimizer, scheduler and RNG state of that step, and
`ResumableSampler` skips the batches already seen, so the run continues to the weights of an
uninterrupted one (bit-identical on CPU: augmentation is seeded per (seed, epoch, index)).
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DistributedSampler

from ..errors import VTError

_pending: list[int] = []   # the signal received, if any


class StopRequested(Exception):
    """Raised at a step boundary after SIGINT / SIGTERM; `exit_code` is 128 + the signal."""

    def __init__(self, signum: int, where: str = "", step: int | None = None) -> None:
        self.signum, self.where, self.step = signum, where, step
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def graceful_stop(*, defer: bool = True) -> Iterator[None]:
    """Handle SIGINT and SIGTERM for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _pending or not defer:
            _pending.append(signum)
            raise StopRequested(signum) if not defer else KeyboardInterrupt
        _pending.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _pending.clear()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _pending.clear()


def stop_pending() -> bool:
    return bool(_pending)


def check_stop(*, epoch: int, step: int) -> None:
    """Raise `StopRequested` if a signal came; call only at a step boundary."""
    if _pending:
        raise StopRequested(_pending[0], f" at epoch {epoch + 1}, step {step}", step)


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` that can skip the first `skip` indices of its epoch's order (the
    batches a resumed run has already trained on); `skip` is reset by the caller after one epoch."""

    skip: int = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def save_interrupted(path: Path, *, meta: dict | None, model_state: dict, epoch: int, step: int, optimizer: Any,
                     scheduler: Any, scaler: Any, best: dict) -> None:
    """The step-boundary checkpoint: the keys of an epoch checkpoint, `epoch` = epochs completed,
    `step` = optimizer steps done in the interrupted epoch."""
    from .checkpoint import rng_state, save_atomic

    save_atomic({**(meta or {}), "model": model_state, "epoch": epoch, "step": step, "metrics": {},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler else None, "rng": rng_state(), "best": best}, path)


def explain_fault(e: BaseException) -> str | None:
    """One line for a known fatal fault (disk full, a loader worker killed), else None."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {e.filename or 'a file'}: free space or set "
                "run.out_dir to another disk; files written before are intact")
    text = str(e)
    if isinstance(e, RuntimeError) and "DataLoader worker" in text and ("exited unexpectedly" in text or "killed" in text):
        return (f"a data loader worker died ({text.splitlines()[0][:120]}); often out of memory: lower "
                "data.num_workers or train.batch_size, or set data.num_workers=0 to see the error in the main process")
    return None


def disk_full(path: Path, e: OSError) -> VTError:
    return VTError(f"no space left on the device while writing {path}: free space or set run.out_dir to another "
                   f"disk; the previous {path.name} is intact")
