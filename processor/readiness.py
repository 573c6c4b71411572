"""What /health (readiness) and /live (liveness) answer, from the loop's state.

Readiness is UP only while the loop consumes claimed partitions, none halted, publishing
working; liveness only says the loop runs (it polls), with or without partitions, so a probe
does not restart an idle standby instance.
"""

from __future__ import annotations

import time

from processor.partitions import Partitions
from processor.retrying import utc_iso

# A cycle's step (a decide, a publish) taking longer than this is stuck, not slow: decisions
# take milliseconds, and a publish the broker keeps retrying (NOT_ENOUGH_REPLICAS, a leader
# away) fails only at the producer's request timeout (40 s).
STUCK_STEP_S = 10.0


def readiness(
    consuming: bool,
    assigning: bool,
    assigned: int,
    partitions: Partitions,
    publish_error: dict | None,
    stalled: bool,
    retrying: list[dict] = (),
    in_cycle: tuple[str, float] | None = None,
    refused: str | None = None,
) -> tuple[bool, dict]:
    """UP only while consuming partitions (claimed, so not during an assignment), none halted,
    publishing working, no Redis call being retried (`retrying` names each: what, since when;
    the loop is alive meanwhile, so liveness stays UP), no cycle step (`in_cycle`: decide or
    publish, since when) stuck past STUCK_STEP_S (`stuck`), no fetch refused by Kafka
    (`refused`, an ACL revoked while running: `consumeError`). A partition replaying lost Redis writes
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
    if refused is not None:
        body["consumeError"] = refused
    if retrying:
        body["retrying"] = list(retrying)
    stuck = in_cycle is not None and time.time() - in_cycle[1] > STUCK_STEP_S
    if stuck:
        body["stuck"] = {"what": in_cycle[0], "since": utc_iso(in_cycle[1])}
    working = consuming and not assigning and not stalled and publish_error is None and refused is None
    ok = working and not retrying and not stuck and bool(assigned) and not halted
    if not ok:
        body["status"] = "DOWN"
    return ok, body


def liveness(consuming: bool, stalled: bool) -> tuple[bool, dict]:
    """The loop runs (it polls), with or without partitions."""
    ok = consuming and not stalled
    return ok, {"status": "UP" if ok else "DOWN"}
