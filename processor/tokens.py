"""Playback tokens: a JWT on every allow for start and heartbeat.

HS256 is signed here by hand (header precomputed, one HMAC per token): PyJWT costs about
five times as much per token and this runs once per verdict. The unit tests verify these
tokens with PyJWT. RS256 and EdDSA go through PyJWT with a PEM private key.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from typing import Protocol

import jwt
import orjson

from processor.config import DEV_SECRET, Settings

_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    # base64.urlsafe_b64encode without its Python-level wrappers (two calls per token).
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


class TokenSigner(Protocol):
    def sign(
        self, user_id: str, session_id: str, expires_at_ms: int, issued_at_ms: int, token_id: str
    ) -> str: ...


def _claims(user_id: str, session_id: str, expires_at_ms: int, issued_at_ms: int, token_id: str) -> dict:
    # Fixed key order: the same verdict always yields the same token bytes.
    return {
        "sub": user_id,
        "sid": session_id,
        "iat": issued_at_ms // 1000,
        "exp": expires_at_ms // 1000,
        "jti": token_id,
    }


class HS256Signer:
    def __init__(self, secret: bytes) -> None:
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + b"."

    def sign(
        self, user_id: str, session_id: str, expires_at_ms: int, issued_at_ms: int, token_id: str
    ) -> str:
        signing_input = self._header + _b64url(
            orjson.dumps(_claims(user_id, session_id, expires_at_ms, issued_at_ms, token_id))
        )
        mac = self._mac.copy()
        mac.update(signing_input)
        return (signing_input + b"." + _b64url(mac.digest())).decode()


class PyJWTSigner:
    """RS256 / EdDSA with a PEM private key (both deterministic, so redelivery stays identical)."""

    def __init__(self, algorithm: str, private_key_pem: bytes) -> None:
        self._algorithm = algorithm
        self._key = private_key_pem

    def sign(
        self, user_id: str, session_id: str, expires_at_ms: int, issued_at_ms: int, token_id: str
    ) -> str:
        claims = _claims(user_id, session_id, expires_at_ms, issued_at_ms, token_id)
        return jwt.encode(claims, self._key, algorithm=self._algorithm)


def make_signer(settings: Settings) -> TokenSigner:
    if settings.jwt_algorithm == "HS256":
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else DEV_SECRET
        return HS256Signer(secret.encode())
    assert settings.jwt_private_key_file is not None  # checked by Settings
    return PyJWTSigner(settings.jwt_algorithm, settings.jwt_private_key_file.read_bytes())
