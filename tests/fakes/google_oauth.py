"""A fake Google OAuth 2.0 token endpoint for service accounts: the JWT-bearer grant (RFC 7523).

A service-account key's `token_uri` points here. A client signs a JWT with the key (RS256; header
`kid` the key's private_key_id; claims iss = client_email, scope, iat, exp at most an hour later, and
aud, which Google documents as "always https://oauth2.googleapis.com/token" whatever the token_uri:
google-auth sends that too) and POSTs it form-encoded:

    grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>

and gets {"access_token": ..., "expires_in": 3599, "token_type": "Bearer"}. The fake verifies the
signature with the registered public key and checks the claims; what a client got wrong (the form,
the grant type, a malformed JWT, a wrong `aud`) is a contract violation. What a real key can meet is
answered as Google does, not recorded: a revoked key (400 invalid_grant "Invalid JWT Signature.").
https://developers.google.com/identity/protocols/oauth2/service-account#httprest
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.server import FakeServer, Reply, Request

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH = "/token"
AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_JWT_LIFETIME_S = 3600
CLOCK_SKEW_S = 300


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A throwaway key for one test session (2048 bits, as Google issues)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Token:
    value: str
    email: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class _Account:
    email: str
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)  # private_key_id -> public key


class GoogleOAuthFake:
    """Service accounts and their keys, the token endpoint, and the access tokens it issued."""

    def __init__(self, server: FakeServer, path: str = TOKEN_PATH) -> None:
        self.server = server
        self.path = path
        self.accounts: dict[str, _Account] = {}
        self.tokens: dict[str, Token] = {}
        self.grants = 0  # tokens issued
        server.route("POST", path, self._token)

    @property
    def token_uri(self) -> str:
        return f"{self.server.url}{self.path}"

    # ------------------------------------------------------------ set-up

    def service_account(self, key: rsa.RSAPrivateKey, email: str = "conductor@release-robot.iam.gserviceaccount.com") -> dict[str, Any]:
        """Register `key` for `email`; the service-account JSON a Cloud console download has."""
        key_id = secrets.token_hex(20)
        self.accounts.setdefault(email, _Account(email)).keys[key_id] = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return {
            "type": "service_account",
            "project_id": email.split("@")[1].split(".")[0],
            "private_key_id": key_id,
            "private_key": pem.decode(),
            "client_email": email,
            "client_id": "1" + "0" * 20,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }

    def revoke_keys(self, email: str) -> None:
        """The account's keys deleted in the Cloud console: their JWTs no longer verify."""
        self.accounts[email].keys.clear()

    def token_info(self, value: str) -> Token | None:
        """The live token `value`, or None (unknown or expired)."""
        token = self.tokens.get(value)
        return token if token is not None and token.expires_at > time.time() else None

    # ------------------------------------------------------------ the endpoint

    def _token(self, req: Request) -> Reply:
        if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self.server.reject(req, "the token request must be application/x-www-form-urlencoded")
        form = parse_qs(req.body.decode(), keep_blank_values=True, strict_parsing=False)
        if sorted(form) != ["assertion", "grant_type"] or any(len(v) != 1 for v in form.values()):
            return self.server.reject(req, f"the JWT-bearer grant takes exactly grant_type and assertion, not {sorted(form)}")
        if form["grant_type"][0] != JWT_BEARER:
            return self.server.reject(req, f"grant_type must be {JWT_BEARER}")
        claims = self._verified_claims(req, form["assertion"][0])
        if isinstance(claims, Reply):
            return claims
        token = Token("ya29.fake-" + secrets.token_urlsafe(24), claims["iss"], frozenset(str(claims["scope"]).split()), time.time() + 3599)
        self.tokens[token.value] = token
        self.grants += 1
        return Reply(200, {"access_token": token.value, "expires_in": 3599, "token_type": "Bearer"})

    def _verified_claims(self, req: Request, assertion: str) -> dict[str, Any] | Reply:
        parts = assertion.split(".")
        try:
            header, claims = (json.loads(_b64decode(p)) for p in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, IndexError):
            return self.server.reject(req, "the assertion is not a JWT (header.claims.signature, base64url)")
        if header.get("alg") != "RS256" or len(parts) != 3:
            return self.server.reject(req, f"the assertion must be signed RS256, not {header.get('alg')}")
        if claims.get("aud") != AUDIENCE:
            return self.server.reject(req, f"the JWT's aud must be {AUDIENCE}, not {claims.get('aud')}")
        problem = _claims_problem(claims)
        if problem:
            return self.server.reject(req, problem)
        account = self.accounts.get(str(claims.get("iss")))
        public = account.keys.get(str(header.get("kid"))) if account else None
        if public is None:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            public.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        return dict(claims)


def _claims_problem(claims: dict[str, Any]) -> str | None:
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        return "the JWT needs iat and exp as integer seconds"
    if exp - iat > MAX_JWT_LIFETIME_S or exp < now or iat > now + CLOCK_SKEW_S:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    if not claims.get("iss") or not claims.get("scope"):
        return "the JWT needs iss (the client_email) and scope"
    return None


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})
