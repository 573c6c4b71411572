"""Who may use the console: a bearer JWT verified like the gateway's callers' (gateway/auth.py:
the same key, algorithm and checks) whose `role` claim is `support` (the contract). A valid
player's token is refused with 403 on every console call; a missing or bad one with 401."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from gateway.auth import AuthError, Verifier, auth_secret, bearer_token
from gateway.settings import GatewaySettings
from processor.wire import MAX_ID_CHARS

SUPPORT_ROLE = "support"


class Forbidden(PermissionError):
    pass


@dataclass(frozen=True)
class Support:
    sub: str

    @property
    def principal(self) -> str:
        """As the verdicts name it: `issuedBy` = support:<sub>."""
        return f"support:{self.sub}"


class SupportAuth:
    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    def support(self, authorization: bytes | None) -> Support:
        """The support principal of an Authorization header; AuthError (401) or Forbidden (403)."""
        if not authorization:
            raise AuthError("send Authorization: Bearer <a support JWT>")
        token = bearer_token(authorization)
        caller = self._verifier.verify(token)  # signature, exp, sub: the gateway's checks
        # Verified above, so the claims can be read as they are.
        role = jwt.decode(token, options={"verify_signature": False}).get("role")
        if role != SUPPORT_ROLE:
            raise Forbidden(f"this console needs a token whose role claim is {SUPPORT_ROLE!r}")
        return Support(caller.user_id)


def support_token(settings: GatewaySettings, sub: str, ttl_seconds: int = 3600) -> str:
    """A development support token (role=support) signed with the configured HS256 secret."""
    if settings.gateway_auth_public_key_file is not None:
        raise ValueError("the gateway verifies with a public key: sign tokens with its private key instead")
    if not 0 < len(sub) <= MAX_ID_CHARS:
        raise ValueError(f"the support principal must be 1 to {MAX_ID_CHARS} characters")
    now = int(time.time())
    claims = {"sub": sub, "role": SUPPORT_ROLE, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, auth_secret(settings), algorithm="HS256")
