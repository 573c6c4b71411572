"""Playback tokens: the hand-rolled HS256 signer and the PyJWT RS256/EdDSA signers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from processor.config import DEV_SECRET, Settings, load_settings
from processor.tokens import HS256Signer, PyJWTSigner, make_signer

SECRET = "0123456789abcdef0123456789abcdef-test-secret"  # >= 32 bytes: no PyJWT key-length warning
EXPIRES_MS = 1_700_000_090_999
ISSUED_MS = 1_700_000_000_500
ARGS = ("u-42", "s-9f1c", EXPIRES_MS, ISSUED_MS, "verdict-1")


def hs256_decode(token: str, secret: str = SECRET) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})


@pytest.fixture(autouse=True)
def _no_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


# --------------------------------------------------------------------------------------------
# HS256
# --------------------------------------------------------------------------------------------


def test_hs256_token_verifies_with_pyjwt_and_carries_contract_claims() -> None:
    token = HS256Signer(SECRET.encode()).sign(*ARGS)
    claims = hs256_decode(token)
    assert claims == {
        "sub": "u-42",
        "sid": "s-9f1c",
        "exp": EXPIRES_MS // 1000,
        "iat": ISSUED_MS // 1000,
        "jti": "verdict-1",
    }


def test_hs256_exp_is_lease_expiry_ms_floored_to_seconds() -> None:
    token = HS256Signer(SECRET.encode()).sign("u", "s", 1_700_000_000_999, 1_600_000_000_000, "j")
    assert hs256_decode(token)["exp"] == 1_700_000_000
    assert isinstance(hs256_decode(token)["exp"], int)


def test_hs256_header_names_the_algorithm_and_type() -> None:
    token = HS256Signer(SECRET.encode()).sign(*ARGS)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_hs256_token_is_unpadded_base64url_in_three_parts() -> None:
    token = HS256Signer(SECRET.encode()).sign(*ARGS)
    parts = token.split(".")
    assert len(parts) == 3
    assert all(part and "=" not in part and "+" not in part and "/" not in part for part in parts)


def test_hs256_token_fails_verification_with_a_wrong_secret() -> None:
    token = HS256Signer(SECRET.encode()).sign(*ARGS)
    with pytest.raises(jwt.InvalidSignatureError):
        hs256_decode(token, "another-secret-of-sufficient-length-32b")


def test_hs256_token_with_tampered_claims_fails_verification() -> None:
    token = HS256Signer(SECRET.encode()).sign(*ARGS)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "u-other"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        hs256_decode(f"{header}.{forged}.{signature}")


def test_hs256_signing_is_deterministic_across_calls_and_signer_instances() -> None:
    first = HS256Signer(SECRET.encode())
    token = first.sign(*ARGS)
    assert first.sign(*ARGS) == token
    assert HS256Signer(SECRET.encode()).sign(*ARGS) == token


def test_hs256_signer_is_reusable_after_many_tokens() -> None:
    signer = HS256Signer(SECRET.encode())
    tokens = [signer.sign("u", f"s-{i}", EXPIRES_MS, ISSUED_MS, f"j-{i}") for i in range(50)]
    assert [hs256_decode(t)["sid"] for t in tokens] == [f"s-{i}" for i in range(50)]


def test_hs256_different_claims_give_different_tokens() -> None:
    signer = HS256Signer(SECRET.encode())
    base = signer.sign(*ARGS)
    assert signer.sign("u-43", *ARGS[1:]) != base
    assert signer.sign(*ARGS[:4], "verdict-2") != base


def test_hs256_non_ascii_ids_round_trip() -> None:
    token = HS256Signer(SECRET.encode()).sign("ユーザー", "séance", EXPIRES_MS, ISSUED_MS, "j")
    claims = hs256_decode(token)
    assert (claims["sub"], claims["sid"]) == ("ユーザー", "séance")


def test_make_signer_hs256_uses_jwt_secret() -> None:
    signer = make_signer(load_settings(jwt_secret=SECRET))
    assert isinstance(signer, HS256Signer)
    assert hs256_decode(signer.sign(*ARGS))["sub"] == "u-42"


def test_make_signer_without_secret_in_insecure_dev_mode_uses_the_dev_secret() -> None:
    signer = make_signer(load_settings(allow_insecure_dev_secret=True))
    assert hs256_decode(signer.sign(*ARGS), DEV_SECRET)["jti"] == "verdict-1"


# --------------------------------------------------------------------------------------------
# RS256 / EdDSA
# --------------------------------------------------------------------------------------------


def _write_pem(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_make_signer_asymmetric_token_verifies_with_the_public_key(
    algorithm: str, tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed25519_key: ed25519.Ed25519PrivateKey
) -> None:
    key = rsa_key if algorithm == "RS256" else ed25519_key
    pem = _write_pem(tmp_path / "signing.pem", key)
    signer = make_signer(load_settings(jwt_algorithm=algorithm, jwt_private_key_file=pem))
    assert isinstance(signer, PyJWTSigner)
    token = signer.sign(*ARGS)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    claims = jwt.decode(token, key.public_key(), algorithms=[algorithm], options={"verify_exp": False})
    assert claims == {
        "sub": "u-42",
        "sid": "s-9f1c",
        "exp": EXPIRES_MS // 1000,
        "iat": ISSUED_MS // 1000,
        "jti": "verdict-1",
    }


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_asymmetric_signing_is_deterministic(
    algorithm: str, tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed25519_key: ed25519.Ed25519PrivateKey
) -> None:
    key = rsa_key if algorithm == "RS256" else ed25519_key
    pem = _write_pem(tmp_path / "signing.pem", key)
    signer = make_signer(load_settings(jwt_algorithm=algorithm, jwt_private_key_file=pem))
    assert signer.sign(*ARGS) == signer.sign(*ARGS)


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_asymmetric_token_fails_verification_with_another_public_key(algorithm: str, tmp_path: Path) -> None:
    if algorithm == "RS256":
        key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    else:
        key, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    signer = make_signer(
        load_settings(jwt_algorithm=algorithm, jwt_private_key_file=_write_pem(tmp_path / "k.pem", key))
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            signer.sign(*ARGS), other.public_key(), algorithms=[algorithm], options={"verify_exp": False}
        )
