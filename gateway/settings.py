"""The gateway's settings, from the environment (and `.env`), validated once at start.

Shares the processor's names for the services and topics (KAFKA_BOOTSTRAP_SERVERS,
EVENTS_TOPIC, REDIS_URL, JWT_SECRET, ...) through `CommonSettings`; its own are GATEWAY_*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator

from processor.config import CommonSettings, SettingsError

MIN_SECRET_BYTES = 32  # RFC 7518 for HS256


class GatewaySettings(CommonSettings):
    gateway_host: str = "0.0.0.0"
    gateway_port: int = Field(8000, ge=0, le=65535)

    # Verifying the callers' bearer tokens: HS256 with a shared secret, or RS256/EdDSA with a PEM key.
    gateway_auth_secret: SecretStr | None = None
    gateway_auth_public_key_file: Path | None = None
    # Without a secret, fall back to the public development secret (development only).
    allow_insecure_dev_secret: bool = False
    # Memory for the callers of verified tokens (auth.TokenCache); 0 checks every token every call.
    gateway_token_cache_bytes: int = Field(16 * 1024 * 1024, ge=0)

    # Signing the fail-open tokens (GATEWAY_ON_TIMEOUT=allow) like the processor signs its own.
    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "RS256", "EdDSA"] = "HS256"
    jwt_private_key_file: Path | None = None

    topic_replication_factor: int = Field(1, ge=1)

    gateway_replies_topic: str = Field("playback.replies", min_length=1, max_length=249)
    # Partitions of the replies topic when the gateway creates it: at most this many instances serve.
    gateway_reply_partitions: int = Field(12, ge=1)
    gateway_consumer_group: str = Field("concurrency-gateway", min_length=1)
    gateway_verdict_timeout_ms: int = Field(3000, ge=1)
    gateway_on_timeout: Literal["deny", "allow"] = "deny"
    # Requests waiting for a verdict at once; one more gets 503 rather than growing memory.
    gateway_max_in_flight: int = Field(10_000, ge=1)
    # Of which one user may hold this many; one more gets 429 (one user cannot take every place).
    gateway_max_in_flight_per_user: int = Field(8, ge=1)
    gateway_retry_after_seconds: int = Field(1, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check_auth(self) -> GatewaySettings:
        if self.gateway_auth_public_key_file is not None:
            if not self.gateway_auth_public_key_file.is_file():
                raise ValueError(
                    f"GATEWAY_AUTH_PUBLIC_KEY_FILE {self.gateway_auth_public_key_file} is not a readable file"
                )
        elif self.gateway_auth_secret is None:
            if not self.allow_insecure_dev_secret:
                raise ValueError(
                    "GATEWAY_AUTH_SECRET is not set: set it to a random string of at least 32 bytes "
                    "(or GATEWAY_AUTH_PUBLIC_KEY_FILE to a PEM public key), or set "
                    "ALLOW_INSECURE_DEV_SECRET=true to accept tokens signed with the development secret"
                )
        elif len(self.gateway_auth_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"GATEWAY_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes (RFC 7518)")
        elif (
            self.jwt_secret is not None
            and self.jwt_secret.get_secret_value() == self.gateway_auth_secret.get_secret_value()
            and not self.allow_insecure_dev_secret
        ):
            # With one secret the processor's playback tokens and the fail-open ones would be API
            # credentials (the verifier refuses tokens with a sid claim anyway, always).
            raise ValueError(
                "GATEWAY_AUTH_SECRET equals JWT_SECRET: the playback tokens the processor signs "
                "would be accepted as API credentials; set two different secrets"
            )
        return self

    @model_validator(mode="after")
    def _check_fail_open_signing(self) -> GatewaySettings:
        if self.gateway_on_timeout != "allow":
            return self  # the gateway signs nothing unless it fails open
        if self.jwt_algorithm == "HS256":
            if self.jwt_secret is None and not self.allow_insecure_dev_secret:
                raise ValueError(
                    "GATEWAY_ON_TIMEOUT=allow signs tokens: set JWT_SECRET (the processor's), "
                    "or ALLOW_INSECURE_DEV_SECRET=true"
                )
            if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value().encode()) < 32:
                raise ValueError("JWT_SECRET must be at least 32 bytes (RFC 7518 for HS256)")
        elif self.jwt_private_key_file is None or not self.jwt_private_key_file.is_file():
            raise ValueError(f"JWT_ALGORITHM={self.jwt_algorithm} needs JWT_PRIVATE_KEY_FILE (a PEM key)")
        return self


def load_gateway_settings(**overrides: object) -> GatewaySettings:
    """Build the settings, turning validation errors into one readable message."""
    try:
        return GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"  {where}: {err['msg']}")
        raise SettingsError("invalid gateway settings:\n" + "\n".join(lines)) from None
