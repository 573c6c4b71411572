"""The hand-rolled HS256 check of the callers' tokens answers as PyJWT does (and is stricter on types)."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import AuthError, Verifier

SECRET = b"unit-test-auth-secret-0123456789abcdef"
FAST = Verifier(SECRET, "HS256")
PYJWT = Verifier(SECRET, "HS256", by_hand=False)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: object, claims: object, secret: bytes = SECRET, alg: str = "HS256") -> str:
    """A token with any header and payload JSON, signed with `secret` (HS256 unless `alg` says HS512)."""
    import hashlib
    import hmac

    signing = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
    return signing + "." + b64(hmac.new(secret, signing.encode(), digest).digest())


def outcome(verifier: Verifier, token: str) -> object:
    try:
        caller = verifier.verify(token)
    except AuthError:
        return "refused"
    return (caller.user_id, caller.plan)


NOW = int(time.time())
OK = {"sub": "u1", "exp": NOW + 86_400}
H = {"alg": "HS256", "typ": "JWT"}
VALID = forge(H, OK)
CASES = {
    "valid": VALID,
    "with plan": forge(H, {**OK, "plan": "gold", "iat": NOW, "jti": "j"}),
    "float exp": forge(H, {**OK, "exp": NOW + 86_400.5}),
    "expired": forge(H, {**OK, "exp": NOW - 1}),
    "nbf ahead": forge(H, {**OK, "nbf": NOW + 86_400}),
    "iat ahead": forge(H, {**OK, "iat": NOW + 86_400}),
    "iat text": forge(H, {**OK, "iat": "soon"}),
    "no sub": forge(H, {"exp": NOW + 86_400}),
    "no exp": forge(H, {"sub": "u1"}),
    "sub number": forge(H, {**OK, "sub": 7}),
    "jti number": forge(H, {**OK, "jti": 7}),
    "other secret": forge(H, OK, secret=b"another-secret-0123456789abcdef-xyz"),
    "HS512": forge({"alg": "HS512"}, OK, alg="HS512"),
    "alg none": forge({"alg": "none"}, OK),
    "crit": forge({**H, "crit": ["exp"]}, OK),
    "header list": forge([1], OK),
    "payload list": forge(H, [1, 2]),
    "tampered": VALID.rsplit(".", 2)[0]
    + "."
    + b64(orjson.dumps({**OK, "sub": "u2"}))
    + "."
    + VALID.rsplit(".")[2],
    "two segments": ".".join(VALID.split(".")[:2]),
    "four segments": VALID + ".x",
    "audience": forge(H, {**OK, "aud": "other-service"}),
    "empty": "",
    "not ascii": VALID[:-1] + "é",
    "not base64": "!!!." + VALID.split(".", 1)[1],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_hand_check_answers_as_pyjwt(name):
    assert outcome(FAST, CASES[name]) == outcome(PYJWT, CASES[name]), name


def test_the_hand_check_refuses_boolean_and_numeric_string_times_and_padding_that_pyjwt_takes():
    assert outcome(FAST, CASES["valid"]) == ("u1", None)
    assert outcome(FAST, CASES["with plan"]) == ("u1", "gold")
    assert outcome(FAST, CASES["expired"]) == "refused"
    numeric_exp = forge(H, {**OK, "exp": str(NOW + 86_400)})
    assert outcome(PYJWT, numeric_exp) == ("u1", None)
    assert outcome(FAST, numeric_exp) == "refused"
    boolean_iat = forge(H, {**OK, "iat": False})
    assert (outcome(PYJWT, boolean_iat), outcome(FAST, boolean_iat)) == (("u1", None), "refused")
    assert outcome(PYJWT, VALID + "=") == ("u1", None)  # PyJWT takes a padded signature
    assert outcome(FAST, VALID + "=") == "refused"
    with pytest.raises(AuthError, match="expired"):
        FAST.verify(CASES["expired"])


def _lenient(value: object) -> bool:
    """A time claim PyJWT takes through int() and the hand check refuses as not a number."""
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit())


claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([{}, OK]),
    claims=st.dictionaries(
        st.sampled_from(["sub", "exp", "iat", "nbf", "jti", "plan", "aud"]),
        st.one_of(claim_values, st.integers(NOW - 100, NOW + 100)),
        max_size=4,
    ),
    alg=st.sampled_from(["HS256", "HS512", "none", None]),
)
def test_any_claims_and_header_get_the_same_answer_from_both(base, claims, alg):
    claims = {**base, **claims}
    if any(_lenient(claims.get(k)) for k in ("exp", "iat", "nbf")):
        return  # a boolean or numeric string time: the known difference of types (above)
    header = {"alg": alg} if alg is not None else {}
    token = forge(header, claims, alg="HS512" if alg == "HS512" else "HS256")
    assert outcome(FAST, token) == outcome(PYJWT, token)
