"""Bearer tokens of the callers: HS256 with a shared secret, or a PEM public key (RS256 / EdDSA).

`sub` is the userId (the event limits apply, and it must be UTF-8 text without control
characters), the optional `plan` claim the event's plan; `exp` is required. A token with a `sid`
claim is a playback token (the processor's, or the gateway's fail-open one), never an API
credential, whatever the secrets. Anything wrong with a token is an `AuthError` (401); which
algorithm is accepted is fixed by the configured key, never by the token's header (no alg
confusion).

HS256 is checked here by hand, as the processor signs it: PyJWT's decode cost about 0.3 ms
per call on this machine (it inspects the key for PEM shapes and parses with stdlib json at
each call), the largest CPU share of a gateway call. The hand check is strict: one HMAC over
the token's first two segments compared in constant time with its canonical base64url
signature, a header naming HS256 and no `crit`, then PyJWT's claim checks. It is stricter on
types only: a time claim that is a boolean or a numeric string, or a signature with base64
padding, is refused; the unit tests hold both to the same answers otherwise. Public keys go
through PyJWT.

`TokenCache` remembers the callers of recently verified tokens (a player sends the same token
with every heartbeat), within a byte budget and only until the token's own `exp`, so a repeated
token costs a header split, one dict lookup and one clock read instead of a JSON parse and an
HMAC.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.settings import GatewaySettings
from processor.config import DEV_SECRET
from processor.wire import MAX_ID_CHARS, MAX_PLAN_CHARS


class AuthError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    plan: str | None


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _text(value: str) -> bool:
    """UTF-8 encodable (no lone surrogate, which PyJWT's json lets through) and no control character."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return _CONTROL.search(value) is None


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64url_decode(segment: bytes) -> bytes:
    if not segment or not _B64URL.issuperset(segment) or len(segment) % 4 == 1:
        raise AuthError("the token is not valid: a segment is not base64url")
    try:
        return binascii.a2b_base64(segment.translate(_FROM_URLSAFE) + b"=" * (-len(segment) % 4))
    except binascii.Error:
        raise AuthError("the token is not valid: a segment is not base64url") from None


def _json_object(segment: bytes, what: str) -> dict:
    try:
        value = orjson.loads(_b64url_decode(segment))
    except orjson.JSONDecodeError:
        raise AuthError(f"the token is not valid: its {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError(f"the token is not valid: its {what} is not a JSON object")
    return value


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Verifier:
    def __init__(self, key: object, algorithm: str, by_hand: bool = True) -> None:
        """`by_hand=False` checks HS256 with PyJWT too (the unit tests compare the two)."""
        self._key = key
        self.algorithm = algorithm
        fast = by_hand and algorithm == "HS256"
        self._mac = hmac.new(key, digestmod=hashlib.sha256) if fast else None  # type: ignore[arg-type]

    def verify(self, token: str) -> Caller:
        return self.verified(token)[0]

    def verified(self, token: str) -> tuple[Caller, int]:
        """The caller of a valid token and the second its token expires at (`exp`, as PyJWT truncates it)."""
        claims = self._hs256(token) if self._mac is not None else self._pyjwt(token)
        if "sid" in claims:
            raise AuthError("a playback token (it has a sid claim) is not an API credential")
        sub = claims["sub"]
        if not isinstance(sub, str) or not 0 < len(sub) <= MAX_ID_CHARS or not _text(sub):
            raise AuthError(
                f"the token's sub (the userId) must be a string of 1 to {MAX_ID_CHARS} characters, "
                "UTF-8 text without control characters"
            )
        plan = claims.get("plan")
        if plan is not None and (
            not isinstance(plan, str) or not 0 < len(plan) <= MAX_PLAN_CHARS or not _text(plan)
        ):
            raise AuthError(
                f"the token's plan must be a string of 1 to {MAX_PLAN_CHARS} characters, "
                "UTF-8 text without control characters"
            )
        return Caller(sub, plan), int(claims["exp"])

    def _pyjwt(self, token: str) -> dict:
        try:
            return jwt.decode(
                token, self._key, algorithms=[self.algorithm], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired: get a new one") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token is not valid: {exc}") from None

    def _hs256(self, token: str) -> dict:
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise AuthError("the token is not valid: not ASCII") from None
        parts = raw.split(b".")
        if len(parts) != 3:
            raise AuthError("the token is not valid: a JWT has three segments")
        header_b64, payload_b64, signature = parts
        mac = self._mac.copy()  # type: ignore[union-attr]
        mac.update(header_b64 + b"." + payload_b64)
        expected = binascii.b2a_base64(mac.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")
        if not hmac.compare_digest(expected, signature):
            raise AuthError("the token is not valid: signature verification failed")
        header = _json_object(header_b64, "header")
        if header.get("alg") != "HS256" or "crit" in header:
            raise AuthError("the token is not valid: the header must name alg HS256 (and no crit)")
        claims = _json_object(payload_b64, "payload")
        now = time.time()
        for name in ("sub", "exp"):
            if name not in claims:
                raise AuthError(f'the token is not valid: Token is missing the "{name}" claim')
        for name in ("exp", "iat", "nbf"):
            if name in claims and not _number(claims[name]):
                raise AuthError(f"the token is not valid: {name} must be a number")
        if claims.get("aud"):  # no audience is configured: refused, as PyJWT refuses it
            raise AuthError("the token is not valid: Invalid audience")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise AuthError("the token is not valid: jti must be a string")
        # PyJWT compares the claims truncated to integers; so does this.
        if int(claims["exp"]) <= now:
            raise AuthError("the token has expired: get a new one")
        for name in ("nbf", "iat"):
            if name in claims and int(claims[name]) > now:
                raise AuthError(f"the token is not valid: not yet valid ({name})")
        return claims


MAX_AUTHORIZATION_BYTES = 8192  # the Authorization header, "Bearer " included: past it, 431 (parsing.py)


def bearer_token(authorization: bytes) -> str:
    """The token of an `Authorization: Bearer <token>` value (latin-1, as HTTP headers are read):
    the scheme in any case, any whitespace around the token."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        raise AuthError("send Authorization: Bearer <JWT> (another scheme was sent)")
    return token


# What an entry costs beyond its strings' characters: the dict slot, the entry tuple, the Caller,
# the str headers and its place in its user's list. tracemalloc measured 350-420 bytes in a cache
# being filled and up to about 500 in a full one that evicts (the dicts' slack); rounded up, so the
# real memory stays under the budget (test_gateway_token_cache measures it).
ENTRY_OVERHEAD_BYTES = 640
TOKENS_PER_USER = 8  # one user's devices and a refresh overlapping the old token; a 9th evicts its oldest


class TokenCache:
    """Callers by their token (the parsed credential, so every spelling of one header is one
    entry), each until its `exp`, within `max_bytes` of memory.

    Only valid tokens are kept (a refused one is checked again each time, so its answer cannot
    go stale, and nobody can fill the cache without tokens signed with the gateway's key). A user
    holds at most TOKENS_PER_USER entries: a new one evicts that user's own oldest, so one player
    with many tokens cannot flush everyone else's. Past the byte budget the oldest entry of all
    goes (a bound, not an LRU: a hit does not move its entry, which keeps a hit to one lookup).
    `nbf`/`iat` in the future were refused before an entry exists, and time only moves on, so the
    expiry is the one check a hit needs.
    """

    def __init__(self, verifier: Verifier, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.verifier = verifier
        self.max_bytes = max_bytes
        self.bytes = 0  # the entries' accounted cost, at most max_bytes
        self._entries: dict[str, tuple[Caller, int, int]] = {}  # token -> (caller, exp, cost)
        self._by_user: dict[str, list[str]] = {}  # user -> its tokens, oldest first

    def caller(self, authorization: bytes) -> Caller:
        token = bearer_token(authorization)
        hit = self._entries.get(token)
        if hit is not None:
            if hit[1] > time.time():
                return hit[0]
            self._forget(token)  # expired: the check below says so
        caller, exp = self.verifier.verified(token)
        self._remember(token, caller, exp)
        return caller

    def _remember(self, token: str, caller: Caller, exp: int) -> None:
        # A valid token is ASCII (a byte a character); the ids may take up to 4 bytes a character.
        cost = ENTRY_OVERHEAD_BYTES + len(token) + 4 * (len(caller.user_id) + len(caller.plan or ""))
        if cost > self.max_bytes:
            return  # a budget of 0 turns the cache off
        mine = self._by_user.get(caller.user_id)
        if mine is not None and len(mine) >= TOKENS_PER_USER:
            self._forget(mine[0])
        while self.bytes + cost > self.max_bytes:
            self._forget(next(iter(self._entries)))
        self._entries[token] = (caller, exp, cost)
        self.bytes += cost
        self._by_user.setdefault(caller.user_id, []).append(token)  # after the evictions: fresh

    def _forget(self, token: str) -> None:
        caller, _exp, cost = self._entries.pop(token)
        self.bytes -= cost
        mine = self._by_user[caller.user_id]
        mine.remove(token)
        if not mine:
            del self._by_user[caller.user_id]

    def __len__(self) -> int:
        return len(self._entries)


def make_verifier(settings: GatewaySettings) -> Verifier:
    if settings.gateway_auth_public_key_file is not None:
        key = load_pem_public_key(settings.gateway_auth_public_key_file.read_bytes())
        if isinstance(key, rsa.RSAPublicKey):
            return Verifier(key, "RS256")
        if isinstance(key, ed25519.Ed25519PublicKey):
            return Verifier(key, "EdDSA")
        raise ValueError("GATEWAY_AUTH_PUBLIC_KEY_FILE must hold an RSA or Ed25519 public key")
    return Verifier(auth_secret(settings), "HS256")


def auth_secret(settings: GatewaySettings) -> bytes:
    secret = settings.gateway_auth_secret
    return (secret.get_secret_value() if secret is not None else DEV_SECRET).encode()


def dev_token(
    settings: GatewaySettings, user_id: str, plan: str | None = None, ttl_seconds: int = 3600
) -> str:
    """A development bearer token signed with the configured HS256 secret."""
    if settings.gateway_auth_public_key_file is not None:
        raise ValueError("the gateway verifies with a public key: sign tokens with its private key instead")
    if not 0 < len(user_id) <= MAX_ID_CHARS:
        raise ValueError(f"USER must be 1 to {MAX_ID_CHARS} characters")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if plan is not None:
        claims["plan"] = plan
    return jwt.encode(claims, auth_secret(settings), algorithm="HS256")
