"""The processor's readiness body for /health: what is consuming, halted, repairing or failing."""

from __future__ import annotations

from processor.partitions import Partitions


def readiness(
    looping: bool, assigned: set, partitions: Partitions, failing: dict | None, refused: str | None = None
) -> tuple[bool, dict]:
    """UP only while the loop runs (`looping`: consuming, not in an assignment, not stalled) with
    partitions claimed, none halted, publishing and fetching working (`failing`, `refused`: what
    Kafka refuses now). A partition replaying lost Redis writes is consuming (UP), and named
    under `repairingPartitions`."""
    body: dict = {"status": "UP", "assignedPartitions": len(assigned)}
    halted = partitions.halted()
    if halted:
        body["stateLostPartitions"] = [s.tp.partition for s in halted]
        body["haltReasons"] = {str(s.tp.partition): s.halt_reason for s in halted}
    repairing = partitions.repairing()  # repair: replaying the log, not halted
    if repairing:
        body["repairingPartitions"] = [s.tp.partition for s in repairing]
    if failing is not None:
        body["publishError"] = failing
    if refused is not None:
        body["consumeError"] = refused
    ok = looping and bool(assigned) and not halted and failing is None and refused is None
    if not ok:
        body["status"] = "DOWN"
    return ok, body
