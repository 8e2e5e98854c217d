"""Connections: a pypsrp WSMan transport (connect), one RunspacePool on it (_Channel), and
the pool of channels a session shares between its threads (_ChannelPool)."""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any, cast

import requests
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan, WSManAction

from bridge import kerberos
from bridge.commands import SessionStats
from bridge.errors import ConfigError, ConnectionFailed, RemoteCommandError
from bridge.remote.faults import _LIBRARY_ERRORS, _THROTTLED, _classify, _Transient
from bridge.remote.output import _install_fast_output
from bridge.remote.settings import ConnectionSettings

log = logging.getLogger(__name__)

#: pypsrp's default; every WinRM/IIS host accepts it (Server 2008 R2 and later).
MAX_ENVELOPE_SIZE = 153600

_AUTH_PACKAGES = {
    # auth -> (module, how to get it); checked before connecting, so a missing library
    # is one clear line instead of an ImportError halfway through the HTTP handshake
    "kerberos": ("gssapi", 'pip install "psbridge[kerberos]" (on Windows SSPI needs nothing)'),
    "credssp": ("requests_credssp", 'pip install "pypsrp[credssp]"'),
}


def _check_auth_support(auth: str) -> None:
    if auth not in _AUTH_PACKAGES or sys.platform == "win32" and auth == "kerberos":
        return
    module, remedy = _AUTH_PACKAGES[auth]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{auth} authentication needs the Python package {module}: {remedy}; or use --auth ntlm"
        ) from exc


class _WSMan(WSMan):
    """pypsrp's WSMan without its own Receive retries.

    pypsrp re-sends a timed-out Receive 5 times on the same connection, sleeping up to
    62 s in between (wsman.py, ``retries_on_read_timeout=5``), and after a read timeout
    an NTLM-encrypted connection is unusable anyway (pypsrp #21). Session retries on a
    new connection instead, with its own bounded backoff.
    """

    def receive(
        self,
        resource_uri: str,
        resource: ET.Element,
        option_set: OptionSet | None = None,
        selector_set: SelectorSet | None = None,
        timeout: int | None = None,
    ) -> ET.Element:
        response = self.invoke(
            WSManAction.RECEIVE, resource_uri, resource, option_set, selector_set, timeout,
            retries_on_read_timeout=0,
        )  # fmt: skip
        return cast(ET.Element, response.find("s:Body", namespaces=NAMESPACES))


def _connect(settings: ConnectionSettings, password: str | None, *, brief: bool = False) -> _WSMan:
    """A pypsrp WSMan transport for ``settings`` (no request sent yet); ``brief`` caps
    its timeouts for housekeeping requests that must not hold a retry up."""
    verify: bool | str = settings.ca_bundle if settings.ca_bundle else settings.verify
    extra: dict[str, Any] = {}
    if settings.auth in ("negotiate", "kerberos"):
        extra["negotiate_service"] = settings.spn_service
    if settings.auth == "certificate":
        extra = {
            "certificate_pem": settings.certificate_pem,
            "certificate_key_pem": settings.certificate_key_pem,
        }
    wsman = _WSMan(
        settings.server,
        port=settings.effective_port,
        username=(kerberos.client_principal(settings.username)
                  if settings.auth in ("negotiate", "kerberos") else settings.username),
        password=password,
        ssl=settings.https,
        path=settings.path.strip("/"),
        auth=settings.auth,
        # pypsrp annotates these as bool/int; requests takes a CA path and float seconds
        cert_validation=cast(Any, verify),
        connection_timeout=cast(
            Any, min(settings.connect_timeout, 5) if brief else settings.connect_timeout
        ),
        read_timeout=cast(Any, min(settings.read_timeout, 10) if brief else settings.read_timeout),
        # below the read timeout, brief or not (pypsrp #182)
        operation_timeout=min(settings.operation_timeout, 8 if brief else 2**31),
        max_envelope_size=MAX_ENVELOPE_SIZE,
        **extra,
    )
    # Build the requests session now and stop it re-reading the environment: pypsrp
    # merges the proxy/CA variables into it at build time, and with trust_env on,
    # requests scans every proxy variable again on each request (~1 ms each).
    transport = wsman.transport
    transport.session = transport._build_session()
    transport.session.trust_env = False
    return wsman


class _Channel:
    """One HTTP connection and the RunspacePool on it; used by one thread at a time."""

    def __init__(self, settings: ConnectionSettings, password: str | None) -> None:
        self.wsman = _connect(settings, password)
        # a request failed after the command's answer was complete: do not reuse it
        self.broken = False
        self.pool = RunspacePool(
            self.wsman, configuration_name=settings.configuration, min_runspaces=1,
            max_runspaces=1,
        )  # fmt: skip
        _install_fast_output(self.pool)

    def open(self) -> None:
        self.pool.open()

    def close(self, settings: ConnectionSettings, password: str | None) -> None:
        """Close the pool politely; when that fails, delete its shell over a fresh
        connection (this one may be broken by the failure, pypsrp #21)."""
        try:
            self.pool.close()
        except requests.exceptions.Timeout as exc:
            # a hung server: more tries would only keep the user waiting at the exit
            log.debug("closing a runspace pool timed out: %s", exc)
        except _LIBRARY_ERRORS as exc:
            log.debug("closing a runspace pool failed: %s", exc)
            self.abandon(settings, password)
            return
        self.wsman.close()

    def abandon(
        self, settings: ConnectionSettings, password: str | None, *, tries: int = 2
    ) -> None:
        """Forget a broken connection and delete its shell over a fresh one.

        After a drop or timeout pypsrp cannot reuse the connection (its NTLM encryption
        state is lost, pypsrp #21), but the server still counts the shell against the
        user's runspace limit (Exchange Online: 3) until it idles out.
        """
        self.wsman.close()
        shell = self.pool.shell
        # (pypsrp sets shell.id before the Create; ``opened`` says the server made it)
        if not shell.opened:
            return
        for _ in range(tries):  # another fresh connection when a try fails in transit
            fresh = _connect(settings, password, brief=True)
            try:
                fresh.delete(shell.resource_uri, selector_set=shell._selector_set)
                return
            except (WSManFaultError, requests.exceptions.Timeout) as exc:
                # the server answered (e.g. no such shell), or hangs: no second try
                log.debug("could not delete an abandoned shell: %s", exc)
                return
            except _LIBRARY_ERRORS as exc:
                log.debug("could not delete an abandoned shell: %s", exc)
            finally:
                fresh.close()


class _ChannelPool:
    """Up to ``concurrency`` channels to one endpoint, each lent to one thread at a time.

    A healthy channel goes back to the idle list after a command; a broken one is dropped
    and its shell deleted. The password lives only here and in pypsrp's transport.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        password: str | None,
        stats: SessionStats,
        lock: threading.Condition,
    ) -> None:
        self.settings = settings
        self.__password = password
        self.stats = stats
        self._lock = lock
        self._idle: list[_Channel] = []
        self._open_count = 0
        self._limit = settings.concurrency
        self._ever_connected = False
        self._closed = False
        self._aborted = False
        self.opened_at: datetime | None = None

    def close(self) -> None:
        """Close every idle channel; those in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open_count -= len(idle)
            self._lock.notify_all()
        for channel in idle:
            channel.close(self.settings, self.__password)

    def abort(self) -> None:
        """Lend no more channels, and tell commands in other threads to stop."""
        with self._lock:
            self._aborted = self._closed = True
            self._lock.notify_all()

    def set_concurrency(self, connections: int) -> None:
        """Allow up to ``connections`` connections at once (one runspace each)."""
        with self._lock:
            self._limit = max(1, connections)
            self._lock.notify_all()

    @property
    def concurrency(self) -> int:
        return self._limit

    def _new_channel(self) -> _Channel:
        _check_auth_support(self.settings.auth)
        try:
            channel = _Channel(self.settings, self.__password)
        except ValueError as exc:
            raise ConfigError(f"invalid connection settings: {exc}") from exc
        try:
            channel.open()
        except _LIBRARY_ERRORS as exc:
            # the shell may exist already (Create answered, the Receive after it failed)
            channel.abandon(self.settings, self.__password)
            _classify(exc, self.settings, first_contact=not self._ever_connected)
            raise  # _classify always raises; this keeps mypy and readers sure of it
        except OSError as exc:
            # requests raises a bare OSError for an unreadable CA or client certificate
            channel.wsman.close()
            raise ConnectionFailed(
                f"cannot connect to {self.settings.url}: {exc.strerror or exc}"
            ) from exc
        self._ever_connected = True
        if self.opened_at is None:
            self.opened_at = datetime.now(UTC)
        return channel

    def _acquire(self) -> _Channel:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        raise RemoteCommandError("the session is closed")
                    if self._idle:
                        return self._idle.pop()
                    if self._open_count < self._limit:
                        self._open_count += 1
                        break
                    self._lock.wait()
            try:
                return self._new_channel()
            except _Transient as exc:
                with self._lock:
                    self._open_count -= 1
                    self._lock.notify_all()
                    if self._open_count > 0 and _THROTTLED.search(str(exc)):
                        # The server allows fewer runspaces than asked (Exchange Online: 3;
                        # or other sessions of this user): go on with those already open.
                        self._limit = max(1, self._open_count)
                        log.warning("the server refused another runspace; using %d", self._limit)
                        continue
                raise
            except BaseException:
                with self._lock:
                    self._open_count -= 1
                    self._lock.notify_all()
                raise

    def _release(self, channel: _Channel) -> None:
        if channel.broken:
            self._discard(channel)
            return
        with self._lock:
            if self._closed:
                self._open_count -= 1
                close = True
            else:
                self._idle.append(channel)
                close = False
            self._lock.notify()
        if close:
            channel.close(self.settings, self.__password)

    def _discard(self, channel: _Channel, *, tries: int = 2) -> None:
        channel.abandon(self.settings, self.__password, tries=tries)
        with self._lock:
            self._open_count -= 1
            self.stats.reconnects += 1
            self._lock.notify()
