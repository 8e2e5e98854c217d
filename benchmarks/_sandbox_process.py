"""A sandbox served from its own process, so its CPU does not share the client's GIL.

A real Exchange server does its work on another machine: a benchmark of the client
must not charge the server's serialization to the client (or let the two contend for
one interpreter lock).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bridge.sandbox.server import Sandbox


@dataclass
class SandboxProcess:
    """Where the sandbox listens and how to log on; ``requests_served()`` asks it live."""

    host: str
    port: int
    username: str
    password: str
    mailboxes: int
    devices: int
    _conn: Connection

    def requests_served(self) -> int:
        self._conn.send("requests")
        count: int = self._conn.recv()
        return count


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    with Sandbox(**options) as sb:
        conn.send(
            {
                "host": sb.host, "port": sb.port, "username": sb.username,
                "password": sb.password, "mailboxes": len(sb.organisation.mailboxes),
                "devices": len(sb.organisation.devices),
            }
        )  # fmt: skip
        while True:
            message = conn.recv()
            if message == "requests":
                conn.send(sb.requests_served)
            else:
                conn.send(list(sb.internal_errors))
                return


@contextmanager
def sandbox_process(**options: Any) -> Iterator[SandboxProcess]:
    """``Sandbox(**options)`` in a child process for the duration of the block."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(child, options), daemon=True)
    process.start()
    info = parent.recv()
    try:
        yield SandboxProcess(_conn=parent, **info)
    finally:
        parent.send("stop")
        errors = parent.recv()
        process.join(10)
        if errors:
            raise RuntimeError(f"the sandbox recorded internal errors: {errors[:3]}")
