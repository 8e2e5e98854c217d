"""Exchange Online profiles: tenant, app id and certificate path from config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import build_settings, load_profile
from bridge.errors import ConfigError
from bridge.exo import EXO_MODULE_APP_ID
from bridge.exo.settings import exo_settings


def test_a_profile_holds_tenant_app_id_and_certificate(tmp_path: Path) -> None:
    certificate = tmp_path / "app.pfx"
    certificate.write_bytes(b"x")
    config = tmp_path / "config.toml"
    config.write_text(f'''[profiles.contoso-exo]
tenant = "contoso.onmicrosoft.com"
app_id = "6b2b7f3e-3b7a-4d2c-9a51-5f1f0a8f2c01"
certificate = "{certificate.as_posix()}"
''')
    profile = load_profile("contoso-exo", config)
    settings = exo_settings({"concurrency": 4}, profile)
    assert settings.sign_in.tenant == "contoso.onmicrosoft.com"
    assert settings.sign_in.app_id == "6b2b7f3e-3b7a-4d2c-9a51-5f1f0a8f2c01"
    assert settings.sign_in.certificate == certificate and settings.sign_in.app_only
    assert settings.endpoint == "https://outlook.office365.com"
    assert settings.concurrency == 4
    # a profile with both kinds of keys still gives WSMan settings without the EXO ones
    assert build_settings({"server": "mail.contoso.com"}, profile).server == "mail.contoso.com"


def test_delegated_by_default_with_the_module_app() -> None:
    settings = exo_settings({"tenant": "contoso.onmicrosoft.com"})
    assert settings.sign_in.app_id == EXO_MODULE_APP_ID and not settings.sign_in.app_only


@pytest.mark.parametrize(("values", "message"), [
    ({}, "no tenant given: use --tenant contoso.onmicrosoft.com (or its id)"),
    ({"tenant": "t", "client_secret_env": "S"},
     "app-only sign-in needs the app's id: use --app-id"),
    ({"tenant": "t", "endpoint": "http://127.0.0.1:1"},
     "endpoint must be an https:// URL, not 'http://127.0.0.1:1'"),
    ({"tenant": "t", "certificate": "/no/such.pem", "app_id": "a"},
     "certificate /no/such.pem is not a file"),
])
def test_bad_values_are_one_clear_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        exo_settings(values)
    assert str(caught.value) == message
