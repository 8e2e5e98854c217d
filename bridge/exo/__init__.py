"""Exchange Online without PowerShell: its REST endpoint, signed in with MSAL.

:class:`ExoSource` runs cmdlets (a :class:`bridge.source.Source`); :class:`SignIn` says
how to sign in and :class:`Tokens` gets the tokens (``bridge.exo.signin`` is the only
module importing msal); :mod:`bridge.exo.values` turns the JSON into the same plain rows
the CLIXML reader gives on-premises.
"""

from __future__ import annotations

from bridge.exo.client import EXO_ENDPOINT, ExoSource
from bridge.exo.signin import (
    AUTHORITY_HOST,
    CERTIFICATE_PASSWORD_ENV,
    CLIENT_SECRET_ENV,
    EXO_MODULE_APP_ID,
    SignIn,
    Tokens,
)

__all__ = [
    "AUTHORITY_HOST",
    "CERTIFICATE_PASSWORD_ENV",
    "CLIENT_SECRET_ENV",
    "EXO_ENDPOINT",
    "EXO_MODULE_APP_ID",
    "ExoSource",
    "SignIn",
    "Tokens",
]
