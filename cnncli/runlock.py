"""One writer per run folder: an advisory lock on the folder itself.

A run holds ``fcntl.flock(LOCK_EX)`` on its folder's own file descriptor for as long as it
writes there (no lock file is left behind, and a killed process's lock vanishes with it,
so a stale lock never blocks). A second process that asks for the same folder is told
which process holds it (from ``/proc/locks`` where the system has it).

Locks are per process: :func:`acquire` of a folder this process already holds is a no-op,
and :func:`release` gives it up.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: Folder (resolved) -> the open descriptor that holds its lock, for this process.
_HELD: dict[Path, int] = {}


class FolderBusy(Exception):
    """The folder is locked by another process (``pid``, or None when it cannot be told)."""

    def __init__(self, folder: Path, pid: int | None):
        super().__init__(f"{folder} is being written by {f'process {pid}' if pid else 'another process'}")
        self.folder = folder
        self.pid = pid


def holder(folder: Path) -> int | None:
    """The PID holding a flock on ``folder``, from ``/proc/locks`` (None if unknown)."""
    try:
        st = os.stat(folder)
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 4321 fe:00:260072 0 EOF" (a blocked waiter has "->")
                if len(parts) >= 6 and parts[1] == "FLOCK" and "->" not in parts and parts[5] == key:
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


def acquire(folder: Path) -> None:
    """Lock ``folder`` for this process (no-op if it already holds it), without waiting.

    Raises:
        FolderBusy: Another process holds it.
        OSError: The folder cannot be opened.
    """
    key = Path(folder).resolve()
    if key in _HELD:
        return
    fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(Path(folder), holder(key)) from None
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = fd


def release(folder: Path) -> None:
    """Give up this process's lock on ``folder`` (no-op if it holds none)."""
    fd = _HELD.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)            # closing the descriptor releases the flock
