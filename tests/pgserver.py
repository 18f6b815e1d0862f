"""A throwaway PostgreSQL server on 127.0.0.1 for the distributed sweep test.

Used by ``tests/test_sweep_distributed.py`` (when ``CNNCLI_TEST_POSTGRES_URL`` is unset) and
by ``.ci/run``::

    eval "$(python tests/pgserver.py start)"   # exports CNNCLI_TEST_POSTGRES_URL and _DIR
    python tests/pgserver.py stop "$CNNCLI_TEST_POSTGRES_DIR"

It needs the server binaries (``initdb``, ``pg_ctl``: Debian's postgresql package puts them
in /usr/lib/postgresql/<version>/bin). PostgreSQL refuses to run as root, so as root it runs
them as the ``postgres`` user (``runuser``), which owns the server's folder (a new one
under the system's temporary folder, which that user can reach).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

USER = "cnncli"


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(dirs[0]).parent if dirs else None


def _as_owner(args: list[str]) -> list[str]:
    """``args`` run as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return args
    if not shutil.which("runuser"):
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL as another user")
    return ["runuser", "-u", "postgres", "--", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> tuple[str, Path]:
    """Create a cluster in a new temporary folder (trust authentication, user ``cnncli``),
    start it on a free port of 127.0.0.1 and return its URL and the folder.

    Raises:
        RuntimeError: No binaries, or the server did not start (with its log).
    """
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb) found")
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="cnncli-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    log = folder / "server.log"
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                                  "--no-sync", "-E", "UTF8"]), **run)
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                  "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                                  "start"]), **run)
    except subprocess.CalledProcessError as e:
        text = log.read_text() if log.exists() else ""
        stop(folder)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr or e.stdout}\n{text}") from None
    return f"postgresql://{USER}@127.0.0.1:{port}/postgres", folder


def stop(folder: Path) -> None:
    """Stop the server of ``folder`` (if it runs) and delete its files."""
    bindir = binaries()
    data = Path(folder) / "data"
    if bindir is not None and data.exists():
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        url, where = start()
        print(f"export CNNCLI_TEST_POSTGRES_URL={url} CNNCLI_TEST_POSTGRES_DIR={where}")
    else:
        stop(Path(sys.argv[2]))
