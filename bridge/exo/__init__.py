"""Exchange Online without PowerShell: its REST endpoint, signed in with MSAL.

:class:`ExoSource` runs cmdlets (a :class:`bridge.source.Source`); :class:`SignIn` says
how to sign in and :class:`Tokens` gets the tokens (``bridge.exo.signin`` is the only
module importing msal); :mod:`bridge.exo.values` turns the JSON into the same plain rows
the CLIXML reader gives on-premises.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.exo.client import EXO_ENDPOINT, ExoSource
from bridge.exo.signin import (
    AUTHORITY_HOST,
    CERTIFICATE_PASSWORD_ENV,
    CLIENT_SECRET_ENV,
    EXO_MODULE_APP_ID,
    SignIn,
    Tokens,
)


def connect(sign_in: SignIn, *, endpoint: str = EXO_ENDPOINT, verify: bool | str = True,
            concurrency: int = 3,
            on_device_code: Callable[[str], None] | None = None) -> ExoSource:
    """An ExoSource for ``sign_in``'s tenant; signs in now, so a refusal shows at once."""
    tokens = Tokens(sign_in, on_device_code=on_device_code)
    tokens.token()
    return ExoSource(tokens, sign_in.tenant, endpoint=endpoint, verify=verify,
                     concurrency=concurrency)


__all__ = [
    "AUTHORITY_HOST",
    "CERTIFICATE_PASSWORD_ENV",
    "CLIENT_SECRET_ENV",
    "EXO_ENDPOINT",
    "EXO_MODULE_APP_ID",
    "ExoSource",
    "SignIn",
    "Tokens",
    "connect",
]
