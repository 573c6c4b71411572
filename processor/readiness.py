"""What /health (readiness) and /live (liveness) answer, from the loop's state.

Readiness is UP only while the loop consumes claimed partitions, none halted, publishing
working; liveness only says the loop runs (it polls), with or without partitions, so a probe
does not restart an idle standby instance.
"""

from __future__ import annotations

from processor.partitions import Partitions


def readiness(
    consuming: bool,
    assigning: bool,
    assigned: int,
    partitions: Partitions,
    publish_error: dict | None,
    stalled: bool,
    retrying: list[dict] = (),
) -> tuple[bool, dict]:
    """UP only while consuming partitions (claimed, so not during an assignment), none halted,
    publishing working, no Redis call being retried (`retrying` names each: what, since when;
    the loop is alive meanwhile, so liveness stays UP). A partition replaying lost Redis writes
    is consuming (UP), and named under `repairingPartitions`."""
    body: dict = {"status": "UP", "assignedPartitions": assigned}
    halted = partitions.halted()
    if halted:
        body["stateLostPartitions"] = [s.tp.partition for s in halted]
        body["haltReasons"] = {str(s.tp.partition): s.halt_reason for s in halted}
    repairing = partitions.repairing()  # repair: replaying the log, not halted
    if repairing:
        body["repairingPartitions"] = [s.tp.partition for s in repairing]
    if publish_error is not None:
        body["publishError"] = publish_error
    if retrying:
        body["retrying"] = list(retrying)
    working = consuming and not assigning and not stalled and publish_error is None and not retrying
    ok = working and bool(assigned) and not halted
    if not ok:
        body["status"] = "DOWN"
    return ok, body


def liveness(consuming: bool, stalled: bool) -> tuple[bool, dict]:
    """The loop runs (it polls), with or without partitions."""
    ok = consuming and not stalled
    return ok, {"status": "UP" if ok else "DOWN"}
