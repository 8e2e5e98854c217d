"""A throwaway MIT Kerberos realm on 127.0.0.1 for the Kerberos tests.

Everything lives in one temporary folder: its own krb5.conf and kdc.conf, a database made
by kdb5_util, principals and a service keytab made by kadmin.local, and a krb5kdc on free
ports. No system file is read or changed: every MIT tool and library is pointed at the
folder by environment variables (``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``, ``KRB5_KTNAME``,
``KRB5CCNAME``), which :meth:`Realm.environment` returns for the tests that need them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REALM = "CONTOSO.COM"
#: the MIT programs a realm needs (Debian: krb5-kdc, krb5-admin-server, krb5-user)
PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "kdestroy")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """The path of an MIT program; the KDC's live in sbin, which a user's PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing() -> str | None:
    """Why no realm can be started here (None: it can): a missing program or library."""
    absent = [name for name in PROGRAMS if find_program(name) is None]
    if absent:
        return (f"MIT Kerberos programs not found: {', '.join(absent)} "
                "(apt-get install krb5-kdc krb5-admin-server krb5-user)")
    try:
        import gssapi  # noqa: F401
        import krb5  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install \".[kerberos]\")"
    return None


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the KDC")


@dataclass
class Realm:
    """A running KDC for :data:`REALM` with one user and the sandbox's service principals
    (all in one keytab, as a server's keytab holds its SPNs)."""

    folder: Path
    user: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    services: tuple[str, ...] = ("HTTP/localhost",)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def user_principal(self) -> str:
        return f"{self.user}@{REALM}"

    @property
    def upn(self) -> str:
        """The user as Exchange knows it (the sandbox's account): the UPN, lower case."""
        return f"{self.user}@{REALM.lower()}"

    @property
    def keytab(self) -> Path:
        return self.folder / "service.keytab"

    def environment(self, ccache: Path | None = None) -> dict[str, str]:
        """The variables that point MIT's tools and libraries at this realm."""
        return {
            "KRB5_CONFIG": str(self.folder / "krb5.conf"),
            "KRB5_KDC_PROFILE": str(self.folder / "kdc.conf"),
            "KRB5_KTNAME": f"FILE:{self.keytab}",
            "KRB5CCNAME": f"FILE:{ccache or self.folder / 'ccache-none'}",
        }

    def _run(self, *argv: str, stdin: str | None = None,
             ccache: Path | None = None) -> subprocess.CompletedProcess[str]:
        program = find_program(argv[0])
        assert program is not None, argv[0]
        env = {"PATH": os.environ.get("PATH", ""), **self.environment(ccache)}
        return subprocess.run([program, *argv[1:]], input=stdin, env=env, text=True,
                              capture_output=True, timeout=60, check=False)

    def _admin(self, query: str) -> None:
        done = self._run("kadmin.local", "-r", REALM, "-q", query)
        if done.returncode or "error" in done.stderr.lower():
            raise RuntimeError(f"kadmin.local {query.split()[0]}: {done.stderr.strip()}")

    def start(self) -> Realm:
        """Write the configuration, make the database and principals, start krb5kdc."""
        self.port = _free_port()
        (self.folder / "krb5.conf").write_text(
            # As a Windows client does: the SPN is built from the name as typed, with no
            # DNS canonicalisation, no reverse lookup of an IP and no search domain
            # appended, so an IP or an alias meets "server not found" as it does there.
            "[libdefaults]\n"
            f"  default_realm = {REALM}\n"
            "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n"
            "  dns_canonicalize_hostname = false\n  rdns = false\n  qualify_shortname = \"\"\n"
            "  udp_preference_limit = 1\n"  # TCP: one socket, no UDP retries when down
            "  kdc_timesync = 0\n  max_retries = 1\n"
            "[realms]\n"
            f"  {REALM} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
            "[domain_realm]\n"
            f"  localhost = {REALM}\n  .{REALM.lower()} = {REALM}\n",
            encoding="utf-8",
        )
        (self.folder / "kdc.conf").write_text(
            "[kdcdefaults]\n"
            f"  kdc_listen = 127.0.0.1:{self.port}\n  kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"  {REALM} = {{\n"
            f"    database_name = {self.folder / 'principal'}\n"
            f"    key_stash_file = {self.folder / 'stash'}\n"
            f"    acl_file = {self.folder / 'kadm5.acl'}\n"
            "    max_life = 10h\n"
            "  }\n"
            "[logging]\n"
            f"  kdc = FILE:{self.folder / 'kdc.log'}\n"
            f"  admin_server = FILE:{self.folder / 'kadmin.log'}\n",
            encoding="utf-8",
        )
        (self.folder / "kadm5.acl").write_text("", encoding="utf-8")
        created = self._run("kdb5_util", "create", "-s", "-r", REALM, "-P",
                            secrets.token_urlsafe(16))
        if created.returncode:
            raise RuntimeError(f"kdb5_util create: {created.stderr.strip()}")
        # the password goes in through kadmin.local's query; the folder is the test's own
        self._admin(f"addprinc +requires_preauth -pw {self.password} {self.user}")
        for service in self.services:
            self._admin(f"addprinc -randkey {service}")
            self._admin(f"ktadd -k {self.keytab} {service}")
        program = find_program("krb5kdc")
        assert program is not None
        env = {"PATH": os.environ.get("PATH", ""), **self.environment()}
        console = self.folder / "krb5kdc.out"  # a file, not a pipe nobody drains
        with console.open("wb") as output:
            self.process = subprocess.Popen(
                [program, "-n", "-r", REALM, "-P", str(self.folder / "krb5kdc.pid")],
                env=env, stdout=output, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = console.read_text(encoding="utf-8", errors="replace").strip()
                raise RuntimeError(f"krb5kdc exited: {error}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("krb5kdc did not start listening within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kinit(self, ccache: Path, *, lifetime: str | None = None,
              password: str | None = None) -> subprocess.CompletedProcess[str]:
        """``kinit`` the user into ``ccache`` (the password on stdin, as a person types it)."""
        argv = ["kinit", *(["-l", lifetime] if lifetime else []), self.user_principal]
        return self._run(*argv, stdin=(password or self.password) + "\n", ccache=ccache)
