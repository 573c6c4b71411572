"""The support console's settings (CONSOLE_*), from the environment (and `.env`), beside the
gateway's own (gateway/settings.py), which give the services, topics and the token key."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Serve /console at all (the gateway's players' API works the same either way).
    console_enabled: bool = True
    # The recent decisions kept per account, and for how many accounts (the least recently
    # decided go first): the index's memory bound (docs/console.md has the figures).
    console_recent_per_user: int = Field(5, ge=1, le=100)
    console_max_users: int = Field(50_000, ge=1)
    # The live picture's window, in minutes.
    console_history_minutes: int = Field(60, ge=1, le=24 * 60)
    # Data older than this (the last good read of Kafka or Redis) is shown as stale.
    console_stale_after_seconds: float = Field(10.0, gt=0)
    # How often the ledger follower asks Kafka for the topic's end (the proof that Kafka answers).
    console_check_seconds: float = Field(2.0, gt=0)
