"""The Exchange Online sandbox: emulated Entra with the real msal library, and the REST
endpoint (InvokeCommand, $batch, paging, shapes, errors, knobs) with plain requests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msal
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization

from bridge.sandbox import ExoSandbox
from bridge.sandbox.exo_rest import CONCURRENCY_TEXT
from bridge.sandbox.exo_server import DEFAULT_ADMIN, EXO_SCOPE
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.tls import app_certificate

APP_ID = "6f1d3c8a-2b7e-4f1a-9c3d-5e8f7a6b4c2d"
MODULE_APP = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
SECRET = "app-secret-value"
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}(\+00:00|Z)$")


def _certificate() -> tuple[str, str, str]:
    """A self-signed RSA certificate: (certificate PEM, private key PEM, SHA-1 hex)."""
    key, cert = app_certificate()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return cert_pem, key_pem, cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303


@pytest.fixture(scope="module")
def certificate() -> tuple[str, str, str]:
    return _certificate()


@pytest.fixture(scope="module")
def exo(certificate: tuple[str, str, str]) -> Iterator[ExoSandbox]:
    """One small tenant (30 mailboxes) with an app (certificate and secret, Global Reader)."""
    with ExoSandbox(mailboxes=30, seed=1) as endpoint:
        endpoint.register_app(APP_ID, certificate_pem=certificate[0], secret=SECRET,
                              roles=["Global Reader"])
        yield endpoint
    assert endpoint.internal_errors == []


def _session(exo: ExoSandbox) -> requests.Session:
    session = requests.Session()
    session.verify = str(exo.ca_file)
    session.trust_env = False
    return session


def _app(exo: ExoSandbox, credential: Any, client_id: str = APP_ID
         ) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, authority=exo.authority, instance_discovery=False,
        client_credential=credential, http_client=_session(exo))


def _token(exo: ExoSandbox) -> str:
    result = _app(exo, SECRET).acquire_token_for_client([EXO_SCOPE])
    return str(result["access_token"])


def _invoke(exo: ExoSandbox, cmdlet: str, parameters: dict[str, Any] | None = None, *,
            token: str | None = None, page_size: int | None = None, url: str | None = None
            ) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or _token(exo)}"}
    if page_size:
        headers["Prefer"] = f"odata.maxpagesize={page_size}"
    body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
    return _session(exo).post(
        url or f"{exo.endpoint}/adminapi/beta/{exo.tenant}/InvokeCommand",
        json=body, headers=headers, timeout=30)


def _all_pages(exo: ExoSandbox, cmdlet: str, parameters: dict[str, Any], page_size: int
               ) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Follow nextLinks re-posting the same body: (objects, pages, warnings)."""
    token = _token(exo)
    objects: list[dict[str, Any]] = []
    warnings: list[str] = []
    url: str | None = None
    pages = 0
    while True:
        response = _invoke(exo, cmdlet, parameters, token=token, page_size=page_size, url=url)
        assert response.status_code == 200, response.text
        document = response.json()
        objects.extend(document["value"])
        warnings.extend(document["@adminapi.warnings"])
        pages += 1
        url = document.get("@odata.nextLink")
        if url is None:
            return objects, pages, warnings


# ---- sign-in with the real msal -----------------------------------------------------


def test_msal_client_credentials_with_a_certificate_thumbprint(
        exo: ExoSandbox, certificate: tuple[str, str, str]) -> None:
    cert_pem, key_pem, sha1 = certificate
    result = _app(exo, {"private_key": key_pem, "thumbprint": sha1}).acquire_token_for_client(
        [EXO_SCOPE])
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    assert _invoke(exo, "Get-OrganizationConfig", token=result["access_token"]).status_code == 200


def test_msal_client_credentials_with_a_public_certificate_signs_ps256(
        exo: ExoSandbox, certificate: tuple[str, str, str]) -> None:
    cert_pem, key_pem, _ = certificate
    result = _app(exo, {"private_key": key_pem, "public_certificate": cert_pem}
                  ).acquire_token_for_client([EXO_SCOPE])
    assert "access_token" in result, result


def test_an_assertion_signed_by_an_unregistered_certificate_is_refused(exo: ExoSandbox) -> None:
    _, other_key, other_sha1 = _certificate()
    result = _app(exo, {"private_key": other_key, "thumbprint": other_sha1}
                  ).acquire_token_for_client([EXO_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith(
        "AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was "
        "not found.")
    assert result["error_codes"] == [700027]


def test_an_assertion_with_the_registered_thumbprint_but_another_key_is_refused(
        exo: ExoSandbox, certificate: tuple[str, str, str]) -> None:
    _, other_key, _ = _certificate()
    result = _app(exo, {"private_key": other_key, "thumbprint": certificate[2]}
                  ).acquire_token_for_client([EXO_SCOPE])
    assert result["error_codes"] == [700027]
    assert "The provided signature value did not match" in result["error_description"]


def test_an_expired_assertion_is_refused(exo: ExoSandbox, certificate: tuple[str, str, str]
                                         ) -> None:
    past = int(time.time()) - 3600
    app = msal.ConfidentialClientApplication(
        APP_ID, authority=exo.authority, instance_discovery=False, http_client=_session(exo),
        client_credential={"private_key": certificate[1], "thumbprint": certificate[2]},
        client_claims={"exp": past, "nbf": past - 600, "iat": past - 600})
    result = app.acquire_token_for_client([EXO_SCOPE])
    assert result["error_codes"] == [700024]


def test_client_secret_good_and_bad(exo: ExoSandbox) -> None:
    assert "access_token" in _app(exo, SECRET).acquire_token_for_client([EXO_SCOPE])
    refused = _app(exo, "wrong").acquire_token_for_client([EXO_SCOPE])
    assert refused["error"] == "invalid_client"
    assert refused["error_description"].startswith(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        f"request is the client secret value, not the client secret ID, for a secret added to "
        f"app '{APP_ID}'.")


def test_unknown_app_and_unknown_tenant(exo: ExoSandbox) -> None:
    unknown = str(uuid.uuid4())
    result = _app(exo, SECRET, client_id=unknown).acquire_token_for_client([EXO_SCOPE])
    assert result["error"] == "unauthorized_client"
    assert result["error_description"].startswith(
        f"AADSTS700016: Application with identifier '{unknown}' was not found in the directory "
        f"'{exo.tenant}'.")
    with pytest.raises(ValueError, match="Unable to get authority configuration for "):
        msal.ConfidentialClientApplication(
            APP_ID, authority=f"{exo.endpoint}/fabrikam.onmicrosoft.com",
            instance_discovery=False, client_credential=SECRET, http_client=_session(exo))
    # msal hides the answer's text; a client that fetches the configuration itself sees it
    answer = _session(exo).get(
        f"{exo.endpoint}/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration",
        timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_tenant"
    assert answer.json()["error_description"].startswith(
        "AADSTS90002: Tenant 'fabrikam.onmicrosoft.com' not found. Check to make sure you have "
        "the correct tenant ID and are signing into the correct cloud.")


def test_a_scope_without_default_is_refused_for_app_only(exo: ExoSandbox) -> None:
    result = _app(exo, SECRET).acquire_token_for_client(
        ["https://outlook.office365.com/Exchange.Manage"])
    assert result["error_codes"] == [1002012]


def _public(exo: ExoSandbox, client_id: str = MODULE_APP) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(client_id, authority=exo.authority,
                                        instance_discovery=False, http_client=_session(exo))


def _device_flow(exo: ExoSandbox, app: msal.PublicClientApplication, upn: str | None = None
                 ) -> dict[str, Any]:
    """Initiate, see the sign-in pending, approve through the sandbox (no browser), poll."""
    flow = app.initiate_device_flow(scopes=[EXO_SCOPE])
    assert flow["verification_uri"] == "https://microsoft.com/devicelogin"
    assert flow["user_code"] in flow["message"]
    pending = app.acquire_token_by_device_flow(flow, exit_condition=lambda flow: True)
    assert pending["error"] == "authorization_pending"
    assert pending["error_description"].startswith("AADSTS70016: ")
    exo.approve_device_code(flow["user_code"], upn or DEFAULT_ADMIN)
    flow["latest_attempt_at"] = 0  # the test does not wait out the polling interval
    result: dict[str, Any] = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    return result


def test_device_code_completed_by_the_sandbox_then_a_refresh_token(exo: ExoSandbox) -> None:
    app = _public(exo)
    result = _device_flow(exo, app)
    assert result["id_token_claims"]["preferred_username"] == DEFAULT_ADMIN
    first = result["access_token"]
    assert _invoke(exo, "Get-OrganizationConfig", token=first).status_code == 200
    [account] = app.get_accounts()
    assert account["username"] == DEFAULT_ADMIN
    tokens_before = exo.requests["oauth2/v2.0/token"]
    renewed = app.acquire_token_silent([EXO_SCOPE], account=account, force_refresh=True)
    assert renewed is not None and renewed["access_token"] != first
    assert exo.requests["oauth2/v2.0/token"] == tokens_before + 1
    assert _invoke(exo, "Get-OrganizationConfig", token=renewed["access_token"]
                   ).status_code == 200


def test_device_code_consent_missing_and_conditional_access(exo: ExoSandbox) -> None:
    exo.register_app("0a0a0a0a-1111-2222-3333-444444444444", public_client=True,
                     consented=False, display_name="psbridge")
    refused = _device_flow(exo, _public(exo, "0a0a0a0a-1111-2222-3333-444444444444"))
    assert refused["error"] == "invalid_grant" and refused["suberror"] == "consent_required"
    assert refused["error_description"].startswith(
        "AADSTS65001: The user or administrator has not consented to use the application with "
        "ID '0a0a0a0a-1111-2222-3333-444444444444' named 'psbridge'.")
    exo.register_user("blocked@contoso.onmicrosoft.com", blocked_by_conditional_access=True)
    blocked = _device_flow(exo, _public(exo), "blocked@contoso.onmicrosoft.com")
    assert blocked["error_description"].startswith(
        "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy "
        "does not allow token issuance.")


def test_an_expired_device_code() -> None:
    with ExoSandbox(mailboxes=1, seed=1, device_code_lifetime=0) as exo:
        app = _public(exo)
        flow = app.initiate_device_flow(scopes=[EXO_SCOPE])
        result = app.acquire_token_by_device_flow(flow, exit_condition=lambda flow: True)
        assert result["error"] == "expired_token"
        assert result["error_codes"] == [70020]
    assert exo.internal_errors == []


# ---- InvokeCommand: shapes --------------------------------------------------------------


def test_mailbox_json_shapes_and_exchange_online_names(exo: ExoSandbox) -> None:
    response = _invoke(exo, "Get-Mailbox", {"ResultSize": 3})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        "application/json;odata.metadata=minimal;odata.streaming=true")
    assert response.headers["Rate-Limit-Limit"] == "30000"
    document = response.json()
    assert document["@odata.context"].endswith(
        f"/adminapi/beta/{exo.tenant}/$metadata#Collection(Exchange.GenericHashTable)")
    mailbox = document["value"][0]
    entry = exo.organisation.mailbox_entries[0]
    assert mailbox["Identity"] == mailbox["Name"] == entry.name
    assert mailbox["DistinguishedName"].startswith(
        f"CN={entry.name},OU={exo.tenant},OU=Microsoft Exchange Hosted Organizations,DC=")
    assert mailbox["Guid@data.type"] == "System.Guid" and mailbox["Guid@odata.type"] == "#Guid"
    assert mailbox["EmailAddresses@odata.type"] == "#Collection(String)"
    assert mailbox["WhenCreated@data.type"] == "System.DateTime"
    assert DATE_RE.match(mailbox["WhenCreated"]) and mailbox["WhenCreated"].endswith("+00:00")
    assert mailbox["WhenCreatedUTC"].endswith("Z")
    assert mailbox["RetainDeletedItemsFor"] == "14.00:00:00"
    assert re.fullmatch(r"[\d.]+ [KMGT]?B \([\d,]+ bytes\)|Unlimited", mailbox["MaxSendSize"])
    uuid.UUID(mailbox["ExternalDirectoryObjectId"])
    assert "ResourceType@data.type" not in mailbox  # a null value has no companion
    assert document["@adminapi.warnings"] == [
        "There are more results available than are currently displayed. To view them, increase "
        "the value for the ResultSize parameter."]


def test_external_directory_object_id_is_stable_and_resolves(exo: ExoSandbox) -> None:
    first = _invoke(exo, "Get-Mailbox", {"ResultSize": 1}).json()["value"][0]
    with ExoSandbox(mailboxes=30, seed=1) as again:
        again.register_app(APP_ID, secret=SECRET, roles=["Global Reader"])
        same = _invoke(again, "Get-Mailbox", {"ResultSize": 1}).json()["value"][0]
    assert same["ExternalDirectoryObjectId"] == first["ExternalDirectoryObjectId"]
    found = _invoke(exo, "Get-CASMailbox", {"Identity": first["ExternalDirectoryObjectId"]})
    assert [item["Identity"] for item in found.json()["value"]] == [first["Identity"]]


def test_device_identities_and_statistics_match_the_ground_truth(exo: ExoSandbox) -> None:
    devices, _, _ = _all_pages(exo, "Get-MobileDevice", {"ResultSize": "Unlimited"}, 1000)
    truth = exo.organisation.devices
    assert len(devices) == len(truth)
    device = devices[0]
    entry = next(exo.organisation.iter_devices())
    assert device["Identity"] == f"{entry.mailbox.name}\\ExchangeActiveSyncDevices\\{entry.name}"
    statistics = _invoke(exo, "Get-MobileDeviceStatistics", {"Identity": device["Identity"],
                                                             "ActiveSync": False})
    [stats] = statistics.json()["value"]
    assert stats["Identity"] == device["Identity"]
    expected = truth[0]["LastSuccessSync"]
    assert stats["LastSuccessSync"] == (None if expected is None else expected.astimezone(
        dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"))
    by_mailbox = _invoke(exo, "Get-MobileDeviceStatistics", {"Mailbox": entry.mailbox.name})
    assert len(by_mailbox.json()["value"]) == len(entry.mailbox.devices)


def test_an_empty_identity_returns_everything(exo: ExoSandbox) -> None:
    everything = _invoke(exo, "Get-MobileDeviceStatistics", {"Identity": ""}).json()["value"]
    assert len(everything) == len(exo.organisation.devices)
    assert len(_invoke(exo, "Get-Mailbox", {"Identity": None}).json()["value"]) == 30


def test_organization_config_and_select(exo: ExoSandbox) -> None:
    [config] = _invoke(exo, "Get-OrganizationConfig").json()["value"]
    assert config["Name"] == exo.tenant and config["DisplayName"] == "Contoso"
    response = _session(exo).post(
        f"{exo.endpoint}/adminapi/beta/{exo.tenant}/InvokeCommand?$select=Name,Guid",
        json={"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": 1}}},
        headers={"Authorization": f"Bearer {_token(exo)}"}, timeout=30)
    assert set(response.json()["value"][0]) == {"Name", "Guid", "Guid@data.type",
                                                "Guid@odata.type"}


# ---- paging, errors, batch ----------------------------------------------------------------


def test_paging_by_maxpagesize_returns_each_object_once(exo: ExoSandbox) -> None:
    before = exo.cmdlets["Get-Mailbox"]
    mailboxes, pages, _ = _all_pages(exo, "Get-Mailbox", {"ResultSize": "Unlimited"}, 7)
    assert [item["Identity"] for item in mailboxes] == [
        entry.name for entry in exo.organisation.mailbox_entries]
    assert pages == 5
    assert exo.cmdlets["Get-Mailbox"] == before + 5
    assert [call.offset for call in exo.invocations[-5:]] == [0, 7, 14, 21, 28]


def test_a_next_link_needs_the_same_body(exo: ExoSandbox) -> None:
    first = _invoke(exo, "Get-Mailbox", page_size=5).json()
    changed = _invoke(exo, "Get-CASMailbox", page_size=5, url=first["@odata.nextLink"])
    assert changed.status_code == 400


def test_the_default_result_size_of_1000_and_its_warning() -> None:
    with ExoSandbox(mailboxes=1005, seed=3) as exo:
        exo.register_app(APP_ID, secret=SECRET, roles=["Global Reader"])
        mailboxes, pages, warnings = _all_pages(exo, "Get-Mailbox", {}, 1000)
        assert (len(mailboxes), pages) == (1000, 1)
        assert warnings == [
            "By default, only the first 1000 items are returned. Use the ResultSize parameter "
            "to specify the number of items returned. To return all items, specify "
            "\"-ResultSize Unlimited\". Be aware that, depending on the actual number of items, "
            "returning all items can take a long time and consume a large amount of memory. "
            "Also, we don't recommend storing the results in a variable. Instead, pipe the "
            "results to another task or script to perform batch changes."]
        unlimited, pages, warnings = _all_pages(exo, "Get-Mailbox", {"ResultSize": "Unlimited"},
                                                1000)
        assert (len(unlimited), pages, warnings) == (1005, 2, [])
    assert exo.internal_errors == []


def test_not_found_is_an_odata_error(exo: ExoSandbox) -> None:
    response = _invoke(exo, "Get-MobileDeviceStatistics",
                       {"Identity": "Nobody\\ExchangeActiveSyncDevices\\iPhone§X"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "NotFound"
    error_id, exception_type, text = error["details"][0]["message"].split("|")
    assert re.fullmatch(r"Ex[0-9A-F]{6}", error_id)
    assert exception_type == (
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException")
    assert text == ("The operation couldn't be performed because object 'Nobody\\"
                    "ExchangeActiveSyncDevices\\iPhone§X' couldn't be found on "
                    "'AM0PR07A13DC001.EURPR07A013.PROD.OUTLOOK.COM'.")
    assert error["innererror"]["type"] == (
        "Microsoft.Exchange.Admin.OData.Core.ODataServiceException")


def test_an_unknown_cmdlet_or_parameter_is_400(exo: ExoSandbox) -> None:
    unknown = _invoke(exo, "Get-Nothing")
    assert unknown.status_code == 400
    assert "|System.Management.Automation.CommandNotFoundException|" in unknown.json()[
        "error"]["details"][0]["message"]
    binding = _invoke(exo, "Get-Mailbox", {"Colour": "blue"})
    assert binding.status_code == 400
    assert binding.json()["error"]["details"][0]["message"].endswith(
        "|A parameter cannot be found that matches parameter name 'Colour'.")


def test_batch_of_statistics_requests(exo: ExoSandbox) -> None:
    with_devices = [mb for mb in exo.organisation.mailbox_entries if mb.devices][:3]
    batch = {"requests": [
        {"id": str(number), "method": "POST",
         "url": f"/adminapi/beta/{exo.tenant}/InvokeCommand",
         "body": {"CmdletInput": {"CmdletName": "Get-MobileDeviceStatistics",
                                  "Parameters": {"Mailbox": mailbox.name}}},
         "headers": {"Content-Type": "application/json"}}
        for number, mailbox in enumerate(with_devices)]}
    url = f"{exo.endpoint}/adminapi/beta/{exo.tenant}/$batch"
    headers = {"Authorization": f"Bearer {_token(exo)}"}
    before = exo.requests["$batch"]
    response = _session(exo).post(url, json=batch, headers=headers, timeout=30)
    assert response.status_code == 200
    answers = {item["id"]: item for item in response.json()["responses"]}
    for number, mailbox in enumerate(with_devices):
        assert answers[str(number)]["status"] == 200
        assert len(answers[str(number)]["body"]["value"]) == len(mailbox.devices)
    assert exo.requests["$batch"] == before + 1
    assert all(call.batched for call in exo.invocations[-3:])
    too_many = {"requests": batch["requests"] * 4}
    assert _session(exo).post(url, json=too_many, headers=headers, timeout=30
                              ).status_code == 400


# ---- tokens and roles ---------------------------------------------------------------------


def test_only_live_tokens_are_accepted(exo: ExoSandbox) -> None:
    missing = _session(exo).post(f"{exo.endpoint}/adminapi/beta/{exo.tenant}/InvokeCommand",
                                 json={}, timeout=30)
    assert missing.status_code == 401
    assert 'error="invalid_token"' in missing.headers["WWW-Authenticate"]
    assert _invoke(exo, "Get-Mailbox", token="forged").status_code == 401


def test_a_short_token_lifetime_expires_mid_run() -> None:
    with ExoSandbox(mailboxes=5, seed=1, token_lifetime=0.5) as exo:
        exo.register_app(APP_ID, secret=SECRET, roles=["Global Reader"])
        token = _token(exo)
        assert _invoke(exo, "Get-Mailbox", token=token).status_code == 200
        time.sleep(0.6)
        expired = _invoke(exo, "Get-Mailbox", token=token)
        assert expired.status_code == 401
        assert 'reason="The token has expired."' in expired.headers["x-ms-diagnostics"]
    assert exo.internal_errors == []


def test_a_principal_without_a_role_gets_403_with_an_empty_body(exo: ExoSandbox) -> None:
    exo.register_app("7e7e7e7e-1111-2222-3333-444444444444", secret=SECRET, roles=[])
    token = _app(exo, SECRET, "7e7e7e7e-1111-2222-3333-444444444444").acquire_token_for_client(
        [EXO_SCOPE])["access_token"]
    refused = _invoke(exo, "Get-Mailbox", token=token)
    assert (refused.status_code, refused.content) == (403, b"")


# ---- knobs ----------------------------------------------------------------------------------


@pytest.fixture
def knobbed() -> Iterator[Any]:
    """Start a sandbox with knobs: ``knobbed(**knobs)``; checks it recorded no error."""
    started: list[ExoSandbox] = []

    def start(**knobs: Any) -> ExoSandbox:
        exo = ExoSandbox(mailboxes=8, seed=2, **knobs).start()
        exo.register_app(APP_ID, secret=SECRET, roles=["View-Only Organization Management"])
        started.append(exo)
        return exo

    yield start
    for exo in started:
        exo.stop()
        assert exo.internal_errors == []


def test_throttling_and_gateway_faults(knobbed: Any) -> None:
    exo = knobbed(fault_at={1: "429", 2: "503", 3: "504", 4: "concurrency", 5: "transient",
                            6: "403"}, retry_after=7)
    token = _token(exo)
    throttled = _invoke(exo, "Get-Mailbox", token=token)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "7")
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 503
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 504
    busy = _invoke(exo, "Get-Mailbox", token=token)
    assert (busy.status_code, busy.text) == (429, CONCURRENCY_TEXT)
    assert busy.headers["Content-Type"].startswith("text/plain")
    transient = _invoke(exo, "Get-Mailbox", token=token)
    assert transient.status_code == 500
    assert transient.json()["error"]["innererror"]["type"].endswith("ADTransientException")
    forbidden = _invoke(exo, "Get-Mailbox", token=token)
    assert (forbidden.status_code, forbidden.content) == (403, b"")
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 200


def test_the_concurrency_refusal_may_come_with_another_status(knobbed: Any) -> None:
    exo = knobbed(fault_at={1: "concurrency"}, concurrency_status=500)
    busy = _invoke(exo, "Get-Mailbox")
    assert (busy.status_code, busy.text) == (500, CONCURRENCY_TEXT)


def test_fault_every_nth_request(knobbed: Any) -> None:
    exo = knobbed(fault_every={"429": 3})
    token = _token(exo)
    statuses = [_invoke(exo, "Get-Mailbox", token=token).status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 200, 200, 429]


def test_a_claims_challenge_needs_a_token_requested_with_the_claims(knobbed: Any) -> None:
    exo = knobbed(fault_at={2: "claims"})
    app = _app(exo, SECRET)
    token = app.acquire_token_for_client([EXO_SCOPE])["access_token"]
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 200
    challenged = _invoke(exo, "Get-Mailbox", token=token)
    assert challenged.status_code == 401
    header = challenged.headers["WWW-Authenticate"]
    assert 'error="insufficient_claims"' in header
    claims = base64.b64decode(re.search(r'claims="([^"]+)"', header).group(1)).decode()  # type: ignore[union-attr]
    cached = app.acquire_token_for_client([EXO_SCOPE])["access_token"]
    assert cached == token and _invoke(exo, "Get-Mailbox", token=cached).status_code == 401
    renewed = app.acquire_token_for_client([EXO_SCOPE], claims_challenge=claims)
    assert _invoke(exo, "Get-Mailbox", token=renewed["access_token"]).status_code == 200
    assert json.loads(exo.claims_received[-1])["access_token"]["nbf"]["essential"] is True


def test_the_expired_fault_expires_every_token(knobbed: Any) -> None:
    exo = knobbed(fault_at={1: "expired"})
    token = _token(exo)
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 401
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 401
    assert _invoke(exo, "Get-Mailbox").status_code == 200  # a new token works


def test_forbidden_cmdlets_and_latency(knobbed: Any) -> None:
    exo = knobbed(forbidden_cmdlets=frozenset({"Get-MobileDeviceStatistics"}), latency_ms=60)
    token = _token(exo)
    started = time.monotonic()
    assert _invoke(exo, "Get-Mailbox", token=token).status_code == 200
    assert time.monotonic() - started >= 0.06
    refused = _invoke(exo, "get-mobiledevicestatistics", {"Mailbox": "x"}, token=token)
    assert (refused.status_code, refused.content) == (403, b"")


def test_concurrency_over_the_limit_is_refused_in_plain_text(knobbed: Any) -> None:
    exo = knobbed(max_concurrent=1, latency_ms=300)
    token = _token(exo)
    barrier = threading.Barrier(2)
    answers: list[requests.Response] = []

    def call() -> None:
        barrier.wait()
        answers.append(_invoke(exo, "Get-OrganizationConfig", token=token))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 429]
    assert any(answer.text == CONCURRENCY_TEXT for answer in answers)


def test_a_next_link_to_another_host_records_a_leaked_token(knobbed: Any) -> None:
    exo = knobbed(foreign_next_link=True)
    token = _token(exo)
    first = _invoke(exo, "Get-Mailbox", token=token, page_size=3).json()
    link = first["@odata.nextLink"]
    assert link.startswith(f"https://localhost:{exo.port}/")
    without = _session(exo).post(link, json={}, timeout=30)
    assert (without.status_code, exo.foreign_requests, exo.foreign_tokens) == (401, 1, 0)
    _invoke(exo, "Get-Mailbox", token=token, page_size=3, url=link)
    assert exo.foreign_tokens == 1


def test_unknown_knobs_and_faults_are_refused() -> None:
    with pytest.raises(TypeError):
        ExoSandbox(mailboxes=1, colour="blue")
    with pytest.raises(ValueError, match="unknown fault"):
        ExoSandbox(mailboxes=1, fault_at={1: "teapot"})


def test_the_same_organisation_as_the_on_premises_sandbox() -> None:
    organisation = Organisation(mailboxes=12, seed=5)
    with ExoSandbox(organisation=organisation) as exo:
        exo.register_app(APP_ID, secret=SECRET, roles=["Global Reader"])
        statistics = _invoke(exo, "Get-MobileDeviceStatistics", {"Identity": ""}).json()["value"]
    assert [item["DeviceID"] for item in statistics] == [
        record["DeviceID"] for record in organisation.devices]


def test_statistics_errors_beside_objects_and_alone(knobbed: Any) -> None:
    probe = Organisation(mailboxes=8, seed=2, online_client_types=True)  # as ExoSandbox's
    owner = next(mailbox for mailbox in probe.mailbox_entries if len(mailbox.devices) >= 2)
    broken = owner.devices[0]
    exo = knobbed(statistics_errors=frozenset({broken.device_id}))
    token = _token(exo)
    response = _invoke(exo, "Get-MobileDeviceStatistics", {"Mailbox": owner.name}, token=token)
    document = response.json()
    assert response.status_code == 200
    assert len(document["value"]) == len(owner.devices) - 1
    identity = f"{owner.name}\\ExchangeActiveSyncDevices\\{broken.name}"
    [error] = document["@adminapi.errors"]
    assert error["message"].endswith(
        f"|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
        f"The mobile device '{identity}' cannot be found.")
    alone = _invoke(exo, "Get-MobileDeviceStatistics", {"Identity": identity}, token=token)
    assert alone.status_code == 404
    assert alone.json()["error"]["details"][0]["message"] == error["message"]


def test_invocations_record_the_anchor_mailbox(exo: ExoSandbox) -> None:
    headers = {"Authorization": f"Bearer {_token(exo)}",
               "X-AnchorMailbox": f"UPN:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}"
                                  f"@{exo.tenant}"}
    _session(exo).post(f"{exo.endpoint}/adminapi/beta/{exo.tenant}/InvokeCommand",
                       json={"CmdletInput": {"CmdletName": "Get-OrganizationConfig"}},
                       headers=headers, timeout=30)
    assert exo.invocations[-1].anchor_mailbox == headers["X-AnchorMailbox"]
    assert exo.invocations[-1].cmdlet == "Get-OrganizationConfig"


def test_a_numeric_result_size_is_paged_and_ends_there(exo: ExoSandbox) -> None:
    mailboxes, pages, warnings = _all_pages(exo, "Get-Mailbox", {"ResultSize": 5}, 2)
    assert [item["Name"] for item in mailboxes] == [
        entry.name for entry in exo.organisation.mailbox_entries[:5]]
    assert pages == 3
    assert warnings == [
        "There are more results available than are currently displayed. To view them, increase "
        "the value for the ResultSize parameter."]
