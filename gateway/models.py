"""Request and response bodies of the gateway: they validate the requests and make /openapi.json.

The limits are the player event's (processor.wire), so nothing the gateway accepts can go to
the dead-letter topic for a bad field. Responses of 200/409/410 are the verdict's bytes as
the processor wrote them; `VerdictBody` describes them (plus the gateway's fail-open
`degraded`), it does not re-encode them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from processor.wire import MAX_CLASS_CHARS, MAX_ID_CHARS, MAX_TEXT_CHARS, Conflict, Verdict

Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
# Path ids and the Idempotency-Key: no control characters (U+0000-U+001F, U+007F), which would
# reach logs, Redis keys and tokens unseen.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
PathId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_CONTROL)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
DeviceClass = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLASS_CHARS)]


class StartRequest(BaseModel):
    """POST /v1/sessions. Unknown fields are ignored, as in player events."""

    model_config = ConfigDict(extra="ignore")

    sessionId: Id | None = Field(None, description="absent: the gateway names a new UUID")
    deviceId: Text | None = None
    deviceClass: DeviceClass | None = Field(None, description="e.g. tv, mobile, web (class caps)")
    contentId: Text | None = None


class TerminateRequest(BaseModel):
    """POST /v1/sessions/{sessionId}/terminate: the optional requester session."""

    model_config = ConfigDict(extra="ignore")

    sessionId: Id | None = Field(None, description="the requester's own session (default: 'account')")


class ConflictBody(Conflict):
    """One active lease of a deny's advice, as the verdict carries it."""


class VerdictBody(Verdict):
    """The event's verdict, as on the verdicts topic (`degraded`: the gateway's fail-open allow).

    The wire verdict's fields; a call is answered with its event's own verdict only (never an
    `expire` or a `revoke`), and fail-open answers have no counts."""

    model_config = ConfigDict(extra="allow")

    type: Literal["start", "heartbeat", "stop", "terminate"]
    decision: Literal["allow", "deny"]
    reason: Literal[
        "already_active",
        "started",
        "limit_exceeded",
        "device_class_limit",
        "renewed",
        "no_lease",
        "stopped",
        "not_active",
        "terminated",
        "degraded",
    ]
    activeStreams: int | None
    conflicts: list[ConflictBody] | None = None


class ErrorBody(BaseModel):
    error: str = Field(
        description="a code: bad_request, not_json, too_large, unauthorized, header_too_large, "
        "too_many_requests, unavailable, overloaded, verdict_timeout"
    )
    detail: str = Field(description="what to fix or do next")


class TimeoutBody(ErrorBody):
    eventId: str = Field(description="retry with the same Idempotency-Key: it is the same event")


class SessionBody(ConflictBody):
    """One active lease of the listing: the same fields as a deny's conflict (contract)."""


class SessionsBody(BaseModel):
    userId: str
    sessions: list[SessionBody]


class HealthBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["UP", "DOWN"]
    detail: str | None = None
    replyPartition: int | None = None
