"""Entra's wire details for the emulated tenant (bridge/sandbox/entra.py): the OpenID
configuration, AADSTS error documents, client assertion checks and signed ID tokens. The
Entra side's only importer of ``cryptography`` (the WSMan side's is tls.py).

The texts of 90002, 700016, 7000215, 65001, 53003, 70016, 70020, 1002012, 500011 follow
Entra's public messages; the rest (and which HTTP status each gets) are unverified.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from bridge.sandbox.exo_reply import Reply, json_reply

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
Certificate = x509.Certificate
"""A registered app certificate (this module owns ``cryptography`` for the Entra side)."""


def load_certificate(pem: bytes) -> Certificate:
    """An app certificate from its PEM."""
    return x509.load_pem_x509_certificate(pem)

AADSTS_TEXTS = {
    90002: "Tenant '{0}' not found. Check to make sure you have the correct tenant ID and are "
           "signing into the correct cloud. Check with your subscription administrator, this may "
           "happen if there are no active subscriptions for the tenant.",
    700016: "Application with identifier '{0}' was not found in the directory '{1}'. This can "
            "happen if the application has not been installed by the administrator of the tenant "
            "or consented to by any user in the tenant. You may have sent your authentication "
            "request to the wrong tenant.",
    7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the "
             "client secret value, not the client secret ID, for a secret added to app '{0}'.",
    65001: "The user or administrator has not consented to use the application with ID '{0}' "
           "named '{1}'. Send an interactive authorization request for this user and resource.",
    53003: "Access has been blocked by Conditional Access policies. The access policy does not "
           "allow token issuance.",
    70016: "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    70020: "The provided value for the input parameter 'device_code' is not valid. This device "
           "code has expired.",
    1002012: "The provided value for scope {0} is not valid. Client credential flows must have a "
             "scope value with /.default suffixed to the resource identifier (application ID URI).",
    500011: "The resource principal named {0} was not found in the tenant named {1}. This can "
            "happen if the application has not been installed by the administrator of the tenant "
            "or consented to by any user in the tenant. You might have sent your authentication "
            "request to the wrong tenant.",
    # unverified texts below
    700027: "Client assertion contains an invalid signature. [Reason - {0}, Thumbprint of key "
            "used by client: '{1}', Please visit the Azure Portal, Graph Explorer or directly use "
            "MS Graph to see configured keys for app Id '{2}'.]",
    700024: "Client assertion is not within its valid time range. Current time: {0}, assertion "
            "valid from {1}, expiry time of assertion {2}.",
    700021: "Client assertion application identifier doesn't match 'client_id' parameter.",
    50027: "JWT token is invalid or malformed. {0}",
    7000218: "The request body must contain the following parameter: 'client_assertion' or "
             "'client_secret'.",
    70000: "The provided value for the input parameter 'device_code' is not valid.",
    70003: "The app requested an unsupported grant type '{0}'.",
    9002313: "Invalid request. Request is malformed or invalid.",
    700082: "The refresh token has expired due to inactivity.",
    50126: "Error validating credentials due to invalid username or password.",
}


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def openid_configuration(base_url: str, tenant_id: str) -> dict[str, Any]:
    """The tenant's OpenID configuration (endpoints under the tenant's GUID, as Entra's)."""
    root = f"{base_url}/{tenant_id}"
    return {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{root}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base_url}/oidc/userinfo",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "oid",
                             "preferred_username", "tid", "ver"],
        "kerberos_endpoint": f"{root}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def aadsts_error(base_url: str, status: int, error: str, code: int, *args: Any,
                 suberror: str | None = None) -> Reply:
    """Entra's error document: ``error_description`` starts ``AADSTS<code>: <text>``."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    text = AADSTS_TEXTS[code].format(*args)
    document: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: "
                             f"{correlation} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"{base_url}/error?code={code}",
    }
    if suberror:
        document["suberror"] = suberror
    return json_reply(status, document)


def check_client_assertion(
    certificates: list[x509.Certificate], client_id: str, form: dict[str, str],
    audiences: Collection[str],
) -> tuple[Any, ...] | None:
    """Why a client assertion is refused, as ``(AADSTS code, *text arguments)``, or None when
    it is good: a JWT signed (RS256/PS256/ES256) by the registered certificate its ``x5t``
    or ``x5t#S256`` names, iss = sub = ``client_id``, aud one of ``audiences``, in time."""
    if form.get("client_assertion_type") != JWT_BEARER:
        return (50027, "client_assertion_type")
    try:
        header_b64, payload_b64, signature_b64 = form["client_assertion"].split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(payload_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, KeyError):
        return (50027, "The assertion is not a JWT.")
    digest: hashes.HashAlgorithm
    if "x5t#S256" in header:
        thumbprint, digest = b64url_decode(header["x5t#S256"]), hashes.SHA256()
    elif "x5t" in header:
        thumbprint, digest = b64url_decode(header["x5t"]), hashes.SHA1()  # noqa: S303
    else:
        return (50027, "The assertion has no x5t.")
    certificate = next((cert for cert in certificates
                        if cert.fingerprint(digest) == thumbprint), None)
    if certificate is None:
        return (700027, "The key was not found.", thumbprint.hex().upper(), client_id)
    signed = f"{header_b64}.{payload_b64}".encode("ascii")
    if not verify_signature(certificate, str(header.get("alg", "")), signed, signature):
        return (700027, "The provided signature value did not match the expected signature "
                "value.", thumbprint.hex().upper(), client_id)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return (700021,)
    audience = str(claims.get("aud", ""))
    if audience not in audiences:
        return (50027, f"Invalid audience '{audience}'.")
    now = time.time()
    expires, not_before = float(claims.get("exp", 0)), float(claims.get("nbf", 0))
    if expires <= now or not_before > now + 300:
        def stamp(value: float) -> str:
            return datetime.fromtimestamp(value, UTC).strftime("%m/%d/%Y %H:%M:%S")
        return (700024, stamp(now), stamp(not_before), stamp(expires))
    return None


def verify_signature(certificate: x509.Certificate, algorithm: str, signed: bytes,
                     signature: bytes) -> bool:
    """Whether ``signature`` over ``signed`` is the certificate key's, for RS256/PS256/ES256."""
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm == "RS256":
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, rsa.RSAPublicKey) and algorithm == "PS256":
            key.verify(signature, signed, padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm == "ES256":
            half = len(signature) // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                       int.from_bytes(signature[half:], "big"))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class IdTokenSigner:
    """Signs the ID tokens of a tenant (ES256, a key made at start) and publishes its key."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = b64url(secrets.token_bytes(12))

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (header, claims))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def jwk(self) -> dict[str, str]:
        numbers = self._key.public_key().public_numbers()
        return {"kty": "EC", "use": "sig", "kid": self.key_id, "crv": "P-256",
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big"))}


__all__ = ["AADSTS_TEXTS", "Certificate", "IdTokenSigner", "JWT_BEARER", "aadsts_error",
           "check_client_assertion", "load_certificate", "openid_configuration",
           "verify_signature"]
