"""HTTP authentication for the sandbox: Negotiate (Kerberos or NTLM; pyspnego) and Basic.

The sandbox is the only place in bridge that accepts credentials, so this module owns
pyspnego on the server side. Kerberos is accepted as Exchange's IIS does, with the
service's key from the keytab named by ``KRB5_KTNAME`` (pyspnego's kerberos extra, i.e.
gssapi, must be installed); without one only NTLM completes. Each completed sign-in is
recorded as a :class:`SignIn`, so a test can tell Kerberos from an NTLM fallback.

NTLM acceptors read users from the file named by ``NTLM_USER_FILE``; that variable is
process-wide, so every sandbox in a process appends its user to one file created on
first use (0600, removed at exit), and each connection then checks that the
authenticated principal is its own sandbox's user.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass, field

import spnego
from spnego.exceptions import SpnegoError

ENCRYPTED_BOUNDARY = "Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"

_user_file_lock = threading.Lock()
_user_file: str | None = None


def _remove_user_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def register_ntlm_user(username: str, password: str, netbios_domain: str) -> None:
    """Make ``username`` (UPN) and ``NETBIOS\\user`` known to pyspnego NTLM acceptors.

    A value of NTLM_USER_FILE set before the first sandbox started is kept: its lines are
    copied into the sandbox's file so other acceptors in the process still work.
    """
    global _user_file
    if ":" in username or ":" in password or "\n" in password:
        raise ValueError("sandbox user names and passwords cannot contain ':' or newlines")
    with _user_file_lock:
        if _user_file is None:
            handle, path = tempfile.mkstemp(prefix="psbridge-sandbox-ntlm-", suffix=".txt")
            previous = os.environ.get("NTLM_USER_FILE")
            with os.fdopen(handle, "w", encoding="utf-8") as user_file:
                if previous and os.path.isfile(previous):
                    with open(previous, encoding="utf-8") as earlier:
                        text = earlier.read()
                    user_file.write(text if text.endswith("\n") or not text else text + "\n")
            atexit.register(_remove_user_file, path)
            _user_file = path
        os.environ["NTLM_USER_FILE"] = _user_file
        local_part = username.split("@", 1)[0]
        with open(_user_file, "a", encoding="utf-8") as user_file:
            user_file.write(f":{username}:{password}\n")
            user_file.write(f"{netbios_domain}:{local_part}:{password}\n")


@dataclass
class Account:
    """The one account a sandbox accepts: UPN, NetBIOS form, and password."""

    username: str
    password: str = field(repr=False)
    netbios_domain: str

    def principals(self) -> set[str]:
        local_part = self.username.split("@", 1)[0]
        return {self.username.lower(), f"{self.netbios_domain}\\{local_part}".lower()}

    def matches_principal(self, principal: str | None) -> bool:
        if not principal:
            return False
        principal = principal.lower()
        if principal.startswith("\\"):
            principal = principal[1:]
        return principal in self.principals()


class AuthFailed(Exception):
    """The client's credentials were refused (answered with 401)."""


class DecryptFailed(Exception):
    """A WinRM-encrypted body could not be unwrapped with this connection's context."""


#: an NTLM message's signature (MS-NLMP 2.2.1); SPNEGO carries it unchanged inside
_NTLM_SIGNATURE = b"NTLMSSP\x00"


@dataclass(frozen=True)
class SignIn:
    """One completed Negotiate sign-in as the sandbox saw it on the wire."""

    mechanism: str  # what the context settled on: "kerberos" or "ntlm"
    principal: str  # the client, e.g. admin@CONTOSO.COM (Kerberos) or CONTOSO\admin (NTLM)
    tokens: int  # the client's tokens in the exchange
    ntlm_tokens: int  # of those, tokens that carried an NTLM message (0: no NTLM at all)


class NegotiateAcceptor:
    """One connection's Negotiate context (IIS authenticates per TCP connection)."""

    def __init__(self) -> None:
        self.context = spnego.server(
            protocol="negotiate", options=spnego.NegotiateOptions.wrapping_winrm
        )
        self.tokens = 0
        self.ntlm_tokens = 0

    def step(self, token: bytes) -> bytes | None:
        self.tokens += 1
        self.ntlm_tokens += _NTLM_SIGNATURE in token
        try:
            return self.context.step(token)
        except SpnegoError as exc:
            raise AuthFailed(str(exc)) from exc

    def sign_in(self) -> SignIn:
        """The record of this connection's completed exchange."""
        return SignIn(
            mechanism=str(self.context.negotiated_protocol),
            principal=self.principal or "",
            tokens=self.tokens,
            ntlm_tokens=self.ntlm_tokens,
        )

    @property
    def complete(self) -> bool:
        return bool(self.context.complete)

    @property
    def principal(self) -> str | None:
        try:
            return str(self.context.client_principal)
        except SpnegoError:
            return None

    def unwrap(self, body: bytes, content_type: str) -> bytes:
        """Decrypt a ``multipart/encrypted`` WinRM body (MS-WSMV 2.2.9.1)."""
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        boundary = match.group(1) if match else ENCRYPTED_BOUNDARY
        parts = [
            part
            for part in re.split(rb"--\s*" + re.escape(boundary.encode()) + rb"\r\n", body)
            if part
        ]
        plain = b""
        try:
            for index in range(0, len(parts) - 1, 2):
                header = parts[index]
                length_match = re.search(rb"Length=(\d+)", header)
                if length_match is None:
                    raise DecryptFailed("no OriginalContent length in encrypted body")
                expected = int(length_match.group(1))
                payload = re.sub(
                    rb"--\s*" + re.escape(boundary.encode()) + rb"--\r\n$", b"", parts[index + 1]
                )
                payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
                header_length = struct.unpack("<i", payload[:4])[0]
                signature = payload[4 : 4 + header_length]
                sealed = payload[4 + header_length :]
                chunk = self.context.unwrap_winrm(signature, sealed)
                if len(chunk) != expected:
                    raise DecryptFailed("decrypted length does not match OriginalContent")
                plain += chunk
        except (SpnegoError, struct.error) as exc:
            raise DecryptFailed(str(exc)) from exc
        return plain

    def wrap(self, message: bytes) -> tuple[str, bytes]:
        """Encrypt ``message`` for the client; returns (Content-Type, body)."""
        header, sealed, padding = self.context.wrap_winrm(message)
        boundary = f"--{ENCRYPTED_BOUNDARY}"
        preamble = "\r\n".join(
            [
                boundary,
                f"\tContent-Type: {SPNEGO_PROTOCOL}",
                "\tOriginalContent: type=application/soap+xml;charset=UTF-8;"
                f"Length={len(message) + padding}",
                boundary,
                "\tContent-Type: application/octet-stream",
                "",
            ]
        ).encode()
        body = preamble + struct.pack("<i", len(header)) + header + sealed
        body += f"{boundary}--\r\n".encode()
        content_type = (
            f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="{ENCRYPTED_BOUNDARY}"'
        )
        return content_type, body


def parse_authorization(header: str) -> tuple[str, bytes] | None:
    """``Negotiate <b64>`` -> ("negotiate", token); ``Basic <b64>`` -> ("basic", raw)."""
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("negotiate", "ntlm", "kerberos", "basic"):
        return None
    try:
        token = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return ("negotiate" if scheme in ("ntlm", "kerberos") else scheme), token


def check_basic(token: bytes, account: Account) -> bool:
    """Whether a decoded Basic ``user:password`` names the sandbox's account."""
    try:
        user, _, password = token.decode("utf-8").partition(":")
    except UnicodeDecodeError:
        return False
    return account.matches_principal(user) and password == account.password
