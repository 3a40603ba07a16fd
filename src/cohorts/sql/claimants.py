"""Which processes are alive among those that claimed campaign actions on a SQLite database.

On SQLite a claimed action row is marked ``running`` with its claimant's name and committed at once, so
no database lock is held while the handler runs (see :mod:`cohorts.sql.ledger`). A row whose claimant
died must be due again at once, as a rolled-back transaction would make it.

Each process that claims actions on a SQLite file holds an exclusive ``flock`` on one numbered slot
file in a directory beside the database (``shop.db.cohorts-claimants/3``) and writes a name of its
own into it; its claims record ``"3:<name>"``. A claimant is alive while its slot file is locked and
holds its name: the system drops the lock when the process ends, however it ends. An in-memory
database lives in one process, whose claims are the only ones.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import uuid
import weakref
from typing import IO

__all__ = ["Claimants"]

_GUARD = threading.Lock()
_IN_MEMORY = f"0:{uuid.uuid4().hex}"  # this process's name in the claims on in-memory databases


class _Slot:
    """A slot file this process holds locked, for as long as some :class:`Claimants` uses it."""

    def __init__(self, token: str, handle: IO[bytes]) -> None:
        self.pid = os.getpid()
        self.token = token
        self.handle = handle
        self.users = 0


_HELD: dict[str, _Slot] = {}  # by directory


def _leave(directory: str, slot: _Slot) -> None:
    import fcntl

    with _GUARD:
        slot.users -= 1
        if slot.users > 0:
            return
        if _HELD.get(directory) is slot:
            del _HELD[directory]
        if slot.pid == os.getpid():  # a forked child must not unlock its parent's slot (one lock for both)
            fcntl.flock(slot.handle.fileno(), fcntl.LOCK_UN)
        slot.handle.close()


class Claimants:
    """The claimants of one database: ``database`` is the SQLite file's path (None: in memory)."""

    def __init__(self, database: str | None) -> None:
        self._directory = None if database is None else f"{os.path.abspath(database)}.cohorts-claimants"
        self._slot: _Slot | None = None

    def me(self) -> str:
        """This process's name in claim rows (taking a slot on first use, kept while this object lives)."""
        directory = self._directory
        if directory is None:
            return _IN_MEMORY
        with _GUARD:
            if self._slot is not None and self._slot.pid == os.getpid():
                return self._slot.token
            slot = _HELD.get(directory)
            if slot is None or slot.pid != os.getpid():
                slot = _HELD[directory] = _take_slot(directory)
            slot.users += 1
            self._slot = slot
        weakref.finalize(self, _leave, directory, slot)
        return slot.token

    def alive(self, token: str) -> bool:
        """Whether the process that wrote ``token`` into a claim row still runs."""
        if self._directory is None:  # only this process reaches the database
            return token == _IN_MEMORY
        held = _HELD.get(self._directory)
        if held is not None and held.pid == os.getpid() and held.token == token:
            return True
        slot, _, name = token.partition(":")
        if not slot.isdigit():
            return False
        import fcntl

        try:
            handle = open(os.path.join(self._directory, slot), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # someone holds the slot: is it the one who wrote the token?
                return handle.read().decode("ascii", "replace").strip() == name
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False


def _take_slot(directory: str) -> _Slot:
    import fcntl

    os.makedirs(directory, exist_ok=True)
    name = uuid.uuid4().hex
    for number in itertools.count():
        handle = open(os.path.join(directory, str(number)), "a+b")  # noqa: SIM115 - held while in use
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        with contextlib.suppress(OSError):
            handle.truncate(0)
        handle.write(name.encode("ascii"))
        handle.flush()
        return _Slot(f"{number}:{name}", handle)
    raise AssertionError("unreachable")
