"""The simulator's settings: the shared ones (topics, services, lease rules) from the environment.

The lease rules (MAX_STREAMS, LEASE_TTL_SECONDS, OVERFLOW_POLICY, EVENT_ID_MEMORY) are read
the same way the processor reads them, so the reference model applies the processor's rules.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from processor.config import CommonSettings


class SimSettings(CommonSettings):
    """CommonSettings, plus the processor's JWT_SECRET when known: then tokens are verified too;
    and TOPIC_REPLICATION_FACTOR, for the policies topic when the simulator creates it."""

    jwt_secret: SecretStr | None = None
    topic_replication_factor: int = Field(1, ge=1)
