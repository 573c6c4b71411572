"""The capacity arithmetic of docs/performance.md's "Capacity plan", from figures measured by bench.capacity.

Pure arithmetic, no services: `measured(report)` picks the inputs from a bench.capacity
report, `plan(Measured(...))` returns every step as a dict and `format_plan()` prints it, so
the printed plan is derived from a run, not typed in.

bench.capacity runs as fast as it goes: big batches, the cheapest cost per event. Live, a
partition's batch is its rate times the cycle, and smaller batches cost more per event, so the
CPU per event the plan sizes with is the larger of that run's and the live one (LIVE_COST,
bench.live_cost on a machine that was not saturated).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from processor.lease_store import partition_slot

SLOTS = 16384
# Partition counts worth creating up front: highly composite (many process counts get an
# equal share) and powers of two for comparison.
CANDIDATE_PARTITIONS = (120, 240, 360, 512, 720, 1024, 1440)


# The gateway's CPU per call (HTTP in, event produced, verdict read back, answer out), measured by
# `make bench`'s gateway part (docs/gateway-performance.md: 2 runs at 1,000 starts/s after issue
# 22 on a quiet machine, 0.424 and 0.434 ms). A busy instance batches its produces and reply
# fetches at least as well as that, so this is on the safe side for a process near a full core.
GATEWAY_CPU_S_PER_CALL = 0.429e-3


@dataclass(frozen=True)
class LiveCost:
    """The cost per event of one processor at a live rate (bench.live_cost: records produced at
    that rate, each cycle gathering for GATHER_MS), on a machine that was not saturated."""

    events_per_s: float  # the rate it was measured at
    partitions: int  # over that many partitions
    cpu_s_per_event: float
    redis_cpu_usec_per_event: float


# docs/live-cost.md, "Before and after, alternating on a quiet machine" (2026-12-07, load 0.5-3.3,
# two runs): at 5,000 events/s, 40-42 µs of processor CPU and 29-30 µs of Redis CPU per event; the
# upper ends. Its 12 partitions got 417 events/s each, fewer than the plan's, so its batches were
# smaller and its cost per event is on the safe side. (The 14,000/s run saturated the machine:
# its costs per event were taken while every process waited for a core, so it is not used.)
LIVE_COST = LiveCost(events_per_s=5000, partitions=12, cpu_s_per_event=42e-6, redis_cpu_usec_per_event=30.0)


@dataclass(frozen=True)
class Measured:
    events_per_s_per_process: float  # one processor process, alone in its group
    cpu_s_per_event: float  # that process's CPU per event
    redis_usec_per_event: float  # script time per event, summed over the shards (wall time)
    redis_cpu_usec_per_event: float  # the redis-server processes' CPU per event
    events_per_script_call: float  # the batch size the Redis figure was measured at
    bytes_per_lease: float  # Redis used memory per extra lease (marginal)
    bytes_per_user: float  # Redis used memory per user with state, leases apart
    event_bytes: float  # bytes per event in the events topic's log
    verdict_bytes: float  # bytes per verdict in the verdicts topic's log
    verdicts_per_event: float
    gateway_cpu_s_per_call: float = GATEWAY_CPU_S_PER_CALL  # bench.gateway_part's, not bench.capacity's
    live: LiveCost = LIVE_COST  # bench.live_cost's, not bench.capacity's


@dataclass(frozen=True)
class Assumptions:
    viewers: int = 10_000_000  # concurrent streams, one lease each
    heartbeat_s: float = 30.0  # one event per stream per 30 s
    headroom: float = 1.5  # plan for 50 % above the steady rate
    redis_utilisation: float = 0.7  # of the one core a Redis shard's commands run on
    process_utilisation: float = 1.0  # measured events/s per process is already its full core
    gateway_utilisation: float = 0.7  # of a gateway process's one core (latency: keep it below full)
    # The partition count (fixed for good) must allow this many times the planned processes
    # and shards: room for more viewers, slower code, and a few partitions per shard.
    growth: int = 10
    users_per_viewer: float = 3.0  # users with state (seen within IDLE_USER_TTL, 24 h) per viewer
    ram_factor: float = 2.0  # RAM per shard over its data: fork copy-on-write of AOF rewrites
    broker_mb_per_s: float = 100.0  # produce MB/s one Kafka broker takes comfortably (RF 3)
    replication_factor: int = 3
    topic: str = "playback.events"


def measured(report: dict) -> Measured:
    """The plan's inputs: one process alone on the cluster (else the single node) for the
    per-process figures; the most Redis CPU per event of any cluster run (live batches too),
    and the script time of the cluster run on the least busy machine."""
    rows = report["rows"]
    many = [r for r in rows if r["shards"] > 1] or rows
    alone = min((r for r in many if not r["batch_max_records"]), key=lambda r: r["processes"])
    worst = max(many, key=lambda r: r["redis_cpu_us_per_event"])
    quiet = min(many, key=lambda r: r["machine_cpu_percent"])
    per_lease = alone["bytes_per_lease"]
    lb = report.get("lease_bytes")
    if lb:  # the marginal lease from bench.lease_bytes; the rest of the used memory is per user
        per_lease = lb["variants"]["without_deviceClass"]["per_lease"]["used_memory"]
    per_user = (alone["used_memory_delta"] - alone["leases"] * per_lease) / alone["user_keys"]
    return Measured(
        events_per_s_per_process=alone["events_per_s"] / alone["processes"],
        cpu_s_per_event=alone["processor_cpu_us_per_event"] / 1e6,
        redis_usec_per_event=quiet["redis_usec_per_event"],
        redis_cpu_usec_per_event=worst["redis_cpu_us_per_event"],
        events_per_script_call=worst["events_per_script_call"],
        bytes_per_lease=per_lease,
        bytes_per_user=round(per_user, 1),
        event_bytes=round(report["event_log_bytes"] / alone["events"], 1),
        verdict_bytes=round(alone["verdict_log_bytes"] / alone["verdicts"], 1),
        verdicts_per_event=round(alone["verdicts"] / alone["events"], 3),
    )


def partitions_per_shard(topic: str, partitions: int, shards: int) -> list[int]:
    """Where the partitions' hash slots fall when the slots are split evenly over the shards
    (what `redis-cli --cluster create` does): a partition's keys share one slot."""
    counts = [0] * shards
    for p in range(partitions):
        slot = partition_slot(topic, p)
        counts[min(shards - 1, slot * shards // SLOTS)] += 1
    return counts


def _divisors_up_to(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _next_divisor(n: int, at_least: int) -> int:
    return next(d for d in range(max(1, at_least), n + 1) if n % d == 0)


def partition_table(a: Assumptions, processes: int, shards: int, planned: float) -> list[dict]:
    rows = []
    for p in CANDIDATE_PARTITIONS:
        even = _next_divisor(p, shards)  # shards rounded up to a divisor of p
        busiest = max(partitions_per_shard(a.topic, p, even)) / (p / even)
        rows.append(
            {
                "partitions": p,
                "max_processes": p,
                "allows_growth": p >= a.growth * max(processes, shards),
                "even_process_counts_up_to_64": len(_divisors_up_to(p, 64)),
                # The busiest process holds ceil(P/N) partitions: its share over the mean.
                "busiest_process_over_mean": round(math.ceil(p / processes) / (p / processes), 3),
                "shards": even,
                "busiest_shard_over_mean_default_slots": round(busiest, 3),
                "events_per_s_per_partition": round(planned / p),
            }
        )
    return rows


def plan(m: Measured, a: Assumptions = Assumptions()) -> dict:
    steady = a.viewers / a.heartbeat_s
    planned = steady * a.headroom
    out: dict = {"assumptions": asdict(a), "measured": asdict(m)}
    out["rate"] = {"steady_events_per_s": round(steady), "planned_events_per_s": round(planned)}

    # HTTP tier: every heartbeat is one gateway call (apps speak HTTP); a gateway process is one
    # event loop on one core, kept below full (queueing) at the same target as a Redis shard.
    per_gateway = 1 / m.gateway_cpu_s_per_call * a.gateway_utilisation
    out["http"] = {
        "calls_per_s_per_process_at_full_core": round(1 / m.gateway_cpu_s_per_call),
        "cpu_cores": round(planned * m.gateway_cpu_s_per_call, 1),
        "processes": math.ceil(planned / per_gateway),  # each needs a partition of the replies topic
    }

    # Processors: events/s one process sustains (it is single-threaded: one core); their CPU at
    # the dearer of the as-fast-as-it-goes and the live cost per event.
    per_process = m.events_per_s_per_process * a.process_utilisation
    processes = math.ceil(planned / per_process)
    cpu_s = max(m.cpu_s_per_event, m.live.cpu_s_per_event)
    out["processors"] = {
        "per_process_events_per_s": round(per_process),
        "processes": processes,
        "cpu_s_per_event": cpu_s,
        "cpu_from": "live" if m.live.cpu_s_per_event > m.cpu_s_per_event else "as fast as it goes",
        "cpu_cores": round(planned * cpu_s, 1),
    }

    # Redis: a shard's commands run on one thread, whose busy time is the redis-server's CPU
    # (scripts and network I/O), at the dearer of the worst run's and the live cost per event.
    # Script time (commandstats) is wall time: on a saturated machine it includes waits for a
    # core, so it is shown, not used.
    usec = max(m.redis_cpu_usec_per_event, m.live.redis_cpu_usec_per_event)
    redis_cores = planned * usec / 1e6
    shards = math.ceil(redis_cores / a.redis_utilisation)
    out["redis"] = {
        "usec_per_event": usec,
        "usec_from": "live" if m.live.redis_cpu_usec_per_event > m.redis_cpu_usec_per_event else "worst run",
        "redis_cores": round(redis_cores, 2),
        "shards": shards,
        "events_per_s_per_shard": round(planned / shards),
        "utilisation_per_shard": round(redis_cores / shards, 2),
        "measured_at_events_per_script_call": m.events_per_script_call,
    }

    # Partitions: fixed at creation (the lease state is keyed by partition). Processes and
    # shards are then rounded up to divisors of it, so each gets an equal set of partitions
    # (on Redis, by moving whole partitions' slots: the default even slot split does not).
    table = partition_table(a, processes, shards, planned)
    fit = [r for r in table if r["allows_growth"]]
    best = max(fit or table, key=lambda r: (r["even_process_counts_up_to_64"], -r["partitions"]))
    chosen = next((r for r in fit if r["even_process_counts_up_to_64"] >= 12), best)
    parts = chosen["partitions"]
    even_processes, even_shards = _next_divisor(parts, processes), _next_divisor(parts, shards)
    out["partitions"] = {
        "chosen": parts,
        "processes": even_processes,
        "partitions_per_process": parts // even_processes,
        "shards": even_shards,
        "partitions_per_shard": parts // even_shards,
        "utilisation_per_shard": round(redis_cores / even_shards, 2),
        "table": table,
    }

    # Memory: every lease, and every user with state (leases apart), over the shards.
    users = a.viewers * a.users_per_viewer
    data = a.viewers * m.bytes_per_lease + users * m.bytes_per_user
    default_split = partitions_per_shard(a.topic, parts, even_shards)
    out["memory"] = {
        "users_with_state": round(users),
        "lease_gb": round(a.viewers * m.bytes_per_lease / 1e9, 2),
        "user_gb": round(users * m.bytes_per_user / 1e9, 2),
        "total_gb": round(data / 1e9, 2),
        "per_shard_gb": round(data / even_shards / 1e9, 2),
        "ram_per_shard_gb": round(data / even_shards * a.ram_factor / 1e9, 2),
        "busiest_shard_gb_default_slots": round(data * max(default_split) / parts / 1e9, 2),
    }

    # Kafka: bytes in (events), out (verdicts), written RF times, read by processors and gateways.
    events_mb = planned * m.event_bytes / 1e6
    verdicts_mb = planned * m.verdicts_per_event * m.verdict_bytes / 1e6
    produced = events_mb + verdicts_mb
    out["kafka"] = {
        "events_mb_per_s": round(events_mb, 1),
        "verdicts_mb_per_s": round(verdicts_mb, 1),
        "produced_mb_per_s": round(produced, 1),
        "written_mb_per_s_with_replication": round(produced * a.replication_factor, 1),
        "brokers": max(a.replication_factor, math.ceil(produced / a.broker_mb_per_s)),
    }
    return out


def format_plan(p: dict) -> str:
    a, m, live = p["assumptions"], p["measured"], p["measured"]["live"]
    r, pr, rd, pa, me, k = p["rate"], p["processors"], p["redis"], p["partitions"], p["memory"], p["kafka"]
    chosen = next(row for row in pa["table"] if row["partitions"] == pa["chosen"])
    live_at = f"live at {live['events_per_s']:,.0f} events/s"
    lines = [
        f"Capacity plan for {a['viewers']:,} concurrent viewers (figures from this run; the live and"
        " gateway costs from their benches):",
        f"  rate      {a['viewers']:,} / {a['heartbeat_s']:g} s = {r['steady_events_per_s']:,} events/s;"
        f" x {a['headroom']} headroom = {r['planned_events_per_s']:,} events/s",
        f"  processes {r['planned_events_per_s']:,} / {pr['per_process_events_per_s']:,} events/s per process"
        f" = {pr['processes']} processes (one core each; max({m['cpu_s_per_event'] * 1e6:.1f} µs as fast"
        f" as it goes, {live['cpu_s_per_event'] * 1e6:.1f} µs {live_at})"
        f" = {pr['cpu_s_per_event'] * 1e6:.1f} µs"
        f" CPU/event = {pr['cpu_cores']} cores of processor CPU)",
        f"  shards    {r['planned_events_per_s']:,} x max({m['redis_cpu_usec_per_event']} µs worst run,"
        f" {live['redis_cpu_usec_per_event']} µs {live_at}) = {rd['usec_per_event']} µs Redis CPU per event"
        f" (script time {m['redis_usec_per_event']} µs on the quietest run) / 1e6"
        f" = {rd['redis_cores']} Redis cores; / {a['redis_utilisation']} target utilisation of one core"
        f" per shard ="
        f" {rd['shards']} shards ({rd['events_per_s_per_shard']:,} events/s each, at"
        f" {m['events_per_script_call']:g} events per script call)",
        f"  partitions {pa['chosen']} up front: >= {a['growth']} x max({pr['processes']} processes,"
        f" {rd['shards']} shards); {chosen['even_process_counts_up_to_64']} process counts <= 64 get an"
        f" equal share; {chosen['events_per_s_per_partition']:,} events/s per partition",
        f"  rounded   to divisors of {pa['chosen']}: {pa['processes']} processes"
        f" x {pa['partitions_per_process']} partitions, {pa['shards']} shards"
        f" x {pa['partitions_per_shard']} partitions"
        f" ({pa['utilisation_per_shard']:.0%} of a core each)",
        f"  memory    {a['viewers']:,} leases x {m['bytes_per_lease']:.0f} B"
        f" + {me['users_with_state']:,} users x {m['bytes_per_user']:.0f} B"
        f" = {me['lease_gb']} + {me['user_gb']} = {me['total_gb']} GB; / {pa['shards']} shards"
        f" = {me['per_shard_gb']} GB each, RAM {me['ram_per_shard_gb']} GB per shard"
        f" (x{a['ram_factor']:g} for AOF rewrite forks); {me['busiest_shard_gb_default_slots']} GB"
        " on the busiest shard if the slots stay split evenly",
        "    partitions | even process counts <=64 | busiest process/mean | shards"
        " | busiest shard/mean (default slots)",
    ]
    for row in pa["table"]:
        lines.append(
            f"    {row['partitions']:>10} | {row['even_process_counts_up_to_64']:>24} |"
            f" {row['busiest_process_over_mean']:>20} | {row['shards']:>6}"
            f" | {row['busiest_shard_over_mean_default_slots']:>6}"
            + ("" if row["allows_growth"] else "   (too few for the growth factor)")
        )
    lines.append(
        f"  Kafka     events {r['planned_events_per_s']:,} x {m['event_bytes']:.0f} B"
        f" = {k['events_mb_per_s']} MB/s in; verdicts x {m['verdicts_per_event']:.3f}"
        f" x {m['verdict_bytes']:.0f} B = {k['verdicts_mb_per_s']} MB/s;"
        f" {k['produced_mb_per_s']} MB/s produced, {k['written_mb_per_s_with_replication']} MB/s written with"
        f" RF {a['replication_factor']} -> >= {k['brokers']} brokers at {a['broker_mb_per_s']:g} MB/s each"
    )
    h = p["http"]
    lines.append(
        f"  HTTP      {r['planned_events_per_s']:,} calls/s x {m['gateway_cpu_s_per_call'] * 1e3:.3f} ms"
        f" CPU per call = {h['cpu_cores']} cores; one gateway process serves"
        f" {h['calls_per_s_per_process_at_full_core']:,} calls/s at a full core, at"
        f" {a['gateway_utilisation']:.0%} of one -> {h['processes']} gateway processes (and at least as many"
        " partitions of the replies topic)"
    )
    lines.append(
        f"  caveat    the live costs were measured at"
        f" {live['events_per_s'] / live['partitions']:,.0f} events/s per partition; the plan gives a"
        f" partition {chosen['events_per_s_per_partition']:,}: bigger"
        " batches, cheaper per event. Check the live batch size (concurrency_batch_size) and the CPU per"
        " event at your rates before buying shards"
    )
    return "\n".join(lines)
