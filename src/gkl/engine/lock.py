"""A lock file in the run directory: one process trains a run folder at a time.

``<run_dir>/.lock`` holds ``{"pid", "host", "time"}`` of the owner and is created
with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). A lock whose
owner is a dead process on this host is stale (a killed run) and is taken over;
a lock held by a live process, or by a process on another host, refuses the run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

from gkl.utils.errors import InputError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """Exclusive ownership of a run directory (acquire with :meth:`acquire`, free with :meth:`release`)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        except OSError as error:
            raise InputError(
                f"out_dir: cannot write to the run directory {self.run_dir} ({error.strerror or error})"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        return True

    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one; raise :class:`InputError` if another process holds it."""
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            owner = self._owner()
            pid, host = owner.get("pid"), owner.get("host")
            if isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid):
                try:  # stale: its owner was killed
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            if not owner:  # being written right now, or unreadable: treat as held
                who = "another process (unreadable lock file)"
            else:
                who = f"process {pid} on host {host} since {owner.get('time')}"
            raise InputError(
                f"run directory {self.run_dir} is in use by {who}; wait for it to finish, "
                f"or delete {self.path} if that process is gone"
            )
        raise InputError(f"run directory {self.run_dir}: could not take the lock {self.path}")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
