"""A throwaway PostgreSQL cluster for the tests and benchmarks.

``Cluster.start()`` runs Debian's ``initdb`` and ``pg_ctl`` (from
``/usr/lib/postgresql/*/bin``, or ``$PG_BINDIR``) in a fresh temporary
directory, as the ``postgres`` OS user when we run as root. The server
listens on 127.0.0.1 at a free port and on a private socket directory, with
trust authentication and durability switched off (it is thrown away).
``stop()`` shuts it down and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Cluster", "ClusterUnavailable", "find_bindir"]


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot run here (binaries missing, or the server would not start)."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL bin directory that has initdb and pg_ctl, or None."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A running throwaway cluster; ``url`` is its SQLAlchemy URL (psycopg 3)."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.user = user  # the OS user the server runs as (None: ourselves)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    @classmethod
    def start(cls, bindir: Path | None = None) -> Cluster:
        """Create and start a cluster; raises ClusterUnavailable with the reason when it cannot."""
        bindir = bindir or find_bindir()
        if bindir is None:
            raise ClusterUnavailable("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (set PG_BINDIR)")
        user: str | None = None
        root = Path(tempfile.mkdtemp(prefix="cohorts-pg-"))
        if os.geteuid() == 0:  # initdb refuses to run as root
            user = "postgres"
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                shutil.rmtree(root, ignore_errors=True)
                raise ClusterUnavailable("running as root and there is no 'postgres' OS user") from None
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(bindir, root, _free_port(), user)
        try:
            cluster._init()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ClusterUnavailable(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _init(self) -> None:
        data, sockets = self.root / "data", self.root / "sockets"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-locale")
        sockets.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(sockets, entry.pw_uid, entry.pw_gid)
        options = (
            f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60", "start"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise ClusterUnavailable(f"PostgreSQL did not accept connections on port {self.port}")

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory."""
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A cluster for the duration of a block."""
    running = Cluster.start()
    try:
        yield running
    finally:
        running.stop()
