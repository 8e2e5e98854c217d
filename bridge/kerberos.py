"""Kerberos sign-in failures in words: MIT krb5/GSSAPI errors -> one line and an exit code.

pyspnego reports a failed Kerberos sign-in as a SpnegoError whose text carries the
krb5 library's message (``Minor (...): Server HTTP/10.0.0.5@CONTOSO.COM not found in
Kerberos database``), or, when it gets a ticket with a password itself, as the krb5
package's own ``Krb5Error``. :func:`sign_in_failure` reads that text (and the krb5 error
code where there is one) and names the failure an admin can fix: no ticket, an expired
one, a wrong password, an unknown user, an unreachable KDC, an unknown realm, or a
server name without an SPN (an IP address or a DNS alias). The texts are MIT's (Linux);
Heimdal (macOS) words most of them alike. remote.py calls this from its classification.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.errors import AuthenticationFailed, BridgeError, ConfigError, ConnectionFailed

_library_errors: list[type[Exception]] = []
try:
    # pyspnego gets a ticket with a password through the krb5 package and lets its
    # errors through unwrapped (spnego/_gss.py, _kinit)
    from krb5 import Krb5Error
except ImportError:  # the kerberos extra is not installed: only SpnegoErrors occur
    pass
else:
    _library_errors.append(Krb5Error)

#: exception classes of the Kerberos libraries that can escape pyspnego (none without them)
LIBRARY_ERRORS: tuple[type[Exception], ...] = tuple(_library_errors)

# MIT krb5 error codes (krb5/krb5_err.et), as Krb5Error.err_code gives them and, modulo
# 2**32, as GSSAPI's minor status
_SERVER_UNKNOWN = -1765328377  # KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN
_CLIENT_UNKNOWN = -1765328378  # KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN
_PREAUTH_FAILED = -1765328360  # KRB5KDC_ERR_PREAUTH_FAILED (a KDC that requires preauth: AD)
_BAD_INTEGRITY = -1765328353  # KRB5KRB_AP_ERR_BAD_INTEGRITY (the reply did not decrypt)
_TICKET_EXPIRED = -1765328352  # KRB5KRB_AP_ERR_TKT_EXPIRED
_CLOCK_SKEW = -1765328347  # KRB5KRB_AP_ERR_SKEW
_REALM_UNKNOWN = -1765328230  # KRB5_REALM_UNKNOWN: no KDC configured for the realm
_KDC_UNREACHABLE = -1765328228  # KRB5_KDC_UNREACH


@dataclass(frozen=True)
class _Pattern:
    kind: str
    text: re.Pattern[str]
    codes: frozenset[int] = frozenset()


# In order: the first that matches names the failure. With negotiate, pyspnego's error
# quotes the Kerberos one inside its own, so the texts are searched, not just the types.
_PATTERNS = (
    _Pattern("spn", re.compile(r"Server (?:'?)(?P<name>[^'\s]+?)(?:'?) not found in Kerberos "
                               r"database", re.I), frozenset({_SERVER_UNKNOWN})),
    _Pattern("user", re.compile(r"Client (?:'?)(?P<name>[^'\s]+?)(?:'?) not found in Kerberos "
                                r"database", re.I), frozenset({_CLIENT_UNKNOWN})),
    _Pattern("password", re.compile(r"Preauthentication failed|Decrypt integrity check failed|"
                                    r"Password incorrect", re.I),
             frozenset({_PREAUTH_FAILED, _BAD_INTEGRITY})),
    _Pattern("kdc", re.compile(r"Cannot contact any KDC for (?:requested )?realm(?: "
                               r"'(?P<name>[^']+)')?", re.I), frozenset({_KDC_UNREACHABLE})),
    _Pattern("realm", re.compile(r"Cannot find KDC for (?:requested )?realm(?: "
                                 r"\"(?P<name>[^\"]+)\")?", re.I), frozenset({_REALM_UNKNOWN})),
    _Pattern("skew", re.compile(r"Clock skew too great", re.I), frozenset({_CLOCK_SKEW})),
    _Pattern("expired", re.compile(r"Ticket expired|credentials have expired|"
                                   r"The referenced credential has expired", re.I),
             frozenset({_TICKET_EXPIRED})),
    # MIT names the cache it looked in; GSSAPI's own words for the same come first in
    # the text, so they are a pattern of their own, tried after it
    _Pattern("no_ticket", re.compile(r"No Kerberos credentials available \(default cache: "
                                     r"(?P<name>[^)]+)\)", re.I)),
    _Pattern("no_ticket", re.compile(r"No Kerberos credentials available|No credentials cache "
                                     r"found|No credentials were supplied", re.I)),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _match(exc: BaseException) -> tuple[str, str | None] | None:
    """(kind, the name the library quoted) for the first known failure in ``exc``'s chain."""
    errors = list(_chain(exc))
    codes = {getattr(error, "err_code", None) for error in errors}
    text = " | ".join(str(error) for error in errors)
    for pattern in _PATTERNS:
        found = pattern.text.search(text)
        if found:
            return pattern.kind, found.groupdict().get("name")
        if codes & pattern.codes:
            return pattern.kind, None
    return None


def _is_ip(server: str) -> bool:
    try:
        ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        return False
    return True


def sign_in_failure(
    exc: BaseException, *, server: str, service: str, username: str | None
) -> BridgeError | None:
    """The error to raise for a Kerberos sign-in that failed with ``exc``; None when
    ``exc`` is no Kerberos failure this module knows (the caller's own message applies).

    ``server`` is the name as given (--server), ``service`` the SPN's service (HTTP),
    ``username`` the --user (None: the current identity's ticket).
    """
    matched = _match(exc)
    if matched is None:
        return None
    kind, name = matched
    user = username or "the current identity"
    spn = f"{service}/{server}"
    if kind == "spn":
        if _is_ip(server):
            return AuthenticationFailed(
                f"Kerberos cannot sign in to {server}: it is an IP address, and the KDC has "
                f"no service principal {spn} (server not found in Kerberos database). Use "
                f"the server's real name with --server (the host name of its {service} SPN)."
            )
        return AuthenticationFailed(
            f"Kerberos cannot sign in to {server}: the KDC has no service principal {spn} "
            "(server not found in Kerberos database); the name may be a DNS alias (CNAME) "
            "or a load-balanced name with no SPN. Use the server's real name with --server, "
            "or set kerberos_service if its SPN names another service."
        )
    if kind == "user":
        return AuthenticationFailed(
            f"the Kerberos KDC does not know the user {username or name or user}: check "
            "--user (for Kerberos, user@REALM, e.g. admin@CONTOSO.COM)."
        )
    if kind == "password":
        return AuthenticationFailed(
            f"the Kerberos KDC refused the password of {user}: check the password "
            "(PSBRIDGE_PASSWORD, the keyring or the prompt)."
        )
    if kind == "kdc":
        realm = f" for realm {name}" if name else ""
        return ConnectionFailed(
            f"cannot reach a Kerberos KDC{realm}: check that a domain controller answers "
            "on port 88 from here (the realm's kdc entries in krb5.conf, or DNS)."
        )
    if kind == "realm":
        realm = f" {name}" if name else ""
        return ConfigError(
            f"Kerberos knows no KDC for the realm{realm}: name the realm's KDC in "
            "krb5.conf (or turn on dns_lookup_kdc), and give --user as user@REALM."
        )
    if kind == "skew":
        return AuthenticationFailed(
            "Kerberos refused the sign-in: this machine's clock and the KDC's differ by "
            "more than 5 minutes. Set the clock right (NTP) and try again."
        )
    if kind == "expired":  # only a kinit ticket can be: with --user psbridge gets a new one
        return AuthenticationFailed(
            "the Kerberos ticket of the current identity has expired: renew it with "
            "kinit, or give --user (the password from PSBRIDGE_PASSWORD or the prompt)."
        )
    cache = f" in {name}" if name else ""
    return AuthenticationFailed(
        f"no Kerberos ticket for {user}{cache}: get one with kinit user@REALM, or give "
        "--user (the password from PSBRIDGE_PASSWORD or the prompt)."
    )


def client_principal(username: str | None) -> str | None:
    """``admin@contoso.com`` -> ``admin@CONTOSO.COM``: MIT Kerberos realms are case
    sensitive and Active Directory's are the upper-case domain, so a UPN typed in lower
    case would name a realm no KDC serves; other forms are kept as given."""
    if username is None or "@" not in username or "\\" in username:
        return username
    local, _, realm = username.rpartition("@")
    return f"{local}@{realm.upper()}" if local and realm else username
