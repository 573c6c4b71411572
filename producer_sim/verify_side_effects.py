"""What the processor leaves besides verdicts, as the verifier (producer_sim/verifier.py) checks it:

- the dead-letter topic: exactly the bad records, each once per source (partition,
  offset), with the error `decode_event` names (or `event_id_conflict`), and its key, value
  and original headers as received (those named like the processor's own kept as
  `original.<name>`; a copy marked `truncated` holds a prefix of the value);
- the leases in Redis at the end, at each user's clock, against the model's.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from processor.connections import RedisAccess
from processor.publisher import DLQ_HEADERS
from processor.reference_model import ReferenceModel
from producer_sim.verify_report import VerifyReport


def check_dead_letters(
    rep: VerifyReport,
    bad: dict[tuple[int, int], bytes | None],
    bad_records: dict[tuple[int, int], tuple[str, bytes | None, list]],
    records: list[ConsumerRecord],
    source_topic: str,
) -> None:
    """Each bad record (`bad`: its value, `bad_records`: its error, key and headers, by source
    (partition, offset)) has its dead letter, once per source, and nothing else is there."""
    seen: set[tuple[int, int]] = set()
    for rec in records:
        rep.dlq += 1
        headers = {k: v for k, v in (rec.headers or ())}
        try:
            source = (int(headers["source.partition"]), int(headers["source.offset"]))
            topic = headers["source.topic"].decode()
        except (KeyError, ValueError):
            rep.dlq_unexpected += 1
            rep._example({"kind": "dlq_without_source_headers", "headers": list(headers)})
            continue
        if "error" not in headers or topic != source_topic or source not in bad:
            rep.dlq_unexpected += 1
            rep._example({"kind": "dlq_unexpected", "source": source, "topic": topic})
            continue
        _check_dead_letter(rep, bad, bad_records, rec, source)
        seen.add(source)
    rep.dlq_unique = len(seen)
    rep.dlq_missing = len(set(bad) - seen)


def _check_dead_letter(
    rep: VerifyReport,
    bad: dict[tuple[int, int], bytes | None],
    bad_records: dict[tuple[int, int], tuple[str, bytes | None, list]],
    rec: ConsumerRecord,
    source: tuple[int, int],
) -> None:
    """The copy of one bad record: its error, its key, value and headers as received."""
    code, key, original = bad_records[source]
    ours = [(k, v) for k, v in rec.headers or () if k in DLQ_HEADERS]
    names = [k for k, _ in ours]
    if len(names) != len(set(names)) or dict(ours).get("error") != code.encode():
        rep.dlq_wrong_error += 1
        rep._example({"kind": "dlq_error", "source": source, "expected": code, "headers": ours})
    truncated = dict(ours).get("truncated")
    value = bad[source]
    if truncated is None:
        altered = rec.value != value or rec.key != key
    else:  # too large to copy whole: a prefix of the value, the original size in the header
        altered = truncated != str(len(value or b"")).encode() or not (value or b"").startswith(
            rec.value or b""
        )
    # Original headers named like ours (or like a renamed one) are kept as original.<name>.
    kept = [(f"original.{k}" if k in DLQ_HEADERS or k.startswith("original.") else k, v) for k, v in original]
    theirs = [(k, v) for k, v in rec.headers or () if k not in DLQ_HEADERS]
    if "truncated.headers" in names:
        altered = altered or theirs != kept[: len(theirs)]
    else:
        altered = altered or theirs != kept
    if altered:
        rep.dlq_unexpected += 1
        rep._example({"kind": "dlq_copy_altered", "source": source, "truncated": truncated})


async def check_redis_state(
    rep: VerifyReport,
    events_topic: str,
    rules: tuple[int, int, str, int],
    models: dict[int, ReferenceModel],
    limits: dict[str, int],
    redis_url: RedisAccess | str,
    cluster: bool = False,
) -> None:
    """The leases in Redis (LeaseStore.active_leases at each user's clock) against the model's:
    `rules` are the verifier's (MAX_STREAMS, TTL ms, overflow policy, eventId memory), `models`
    its reference model per partition, `limits` each user's limit under its last policy."""
    from processor.lease_store import LeaseStore, Rules

    max_streams, ttl, policy, memory = rules
    redis = RedisAccess.of(redis_url, cluster).client()
    try:
        store = LeaseStore(redis, events_topic, Rules(max_streams, ttl, policy, memory, 86_400_000))
        checked = 0
        for partition, model in sorted(models.items()):
            for user_id in model.users:
                want = model.active_leases(user_id)
                state = await store.user_state(partition, user_id)
                got_leases = await store.active_leases(partition, user_id)
                got = {sid: lease["expiresAt"] for sid, lease in got_leases.items()}
                checked += 1
                if len(got) > limits.get(user_id, max_streams):
                    rep.over_limit += 1
                clock = None if state is None else state.get("c")
                if got != want or (state is not None and clock != model.users[user_id].clock):
                    rep.state_mismatches += 1
                    if len(got) > len(want):
                        rep.applied_twice += 1
                    rep._example({"kind": "redis_state", "partition": partition, "userId": user_id,
                                  "model": want, "redis": got, "model_clock": model.users[user_id].clock,
                                  "redis_clock": clock})  # fmt: skip
        rep.users_checked_in_redis = checked
    finally:
        await redis.aclose()
