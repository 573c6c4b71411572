"""Counting records in a partition their key does not hash to, and saying so once a minute.

A fleet whose producers use another hash than EVENT_PARTITIONER sends most of its events to
the DLQ (with n partitions, all but about 1 in n). Each one is counted
(`concurrency_key_mismatch_total`, beside `concurrency_dlq_total{error="key_mismatch"}`) and
one warning a minute at most names the setting to change, so it is noticed at once without
one log line per record.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from processor.metrics import Metrics
from processor.partitioning import PRODUCERS, PartitionMismatch
from processor.wire import DecodeError

log = logging.getLogger("processor")

WARNING_INTERVAL_S = 60.0


class KeyMismatches:
    def __init__(
        self,
        metrics: Metrics,
        partitioner: str,
        interval_s: float = WARNING_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._partitioner = partitioner
        self._interval_s = interval_s
        self._clock = clock
        self._last_warning: float | None = None
        self._unreported = 0  # mismatches since the last warning
        self._fits: Counter[str] = Counter()  # of them, how many each other hash would place here
        self.warnings = 0

    def observe(self, dead_letters: Iterable[tuple[object, DecodeError]]) -> None:
        """Count the published dead letters that are partition mismatches; warn when due."""
        found = 0
        for _rec, err in dead_letters:
            if isinstance(err, PartitionMismatch):
                found += 1
                self._fits.update(err.fits)
        if not found:
            return
        self._metrics.key_mismatch.inc(found)
        self._unreported += found
        now = self._clock()
        if self._last_warning is not None and now - self._last_warning < self._interval_s:
            return
        self._warn()
        self._last_warning = now

    def _warn(self) -> None:
        fits = ""
        if self._fits:
            name, count = self._fits.most_common(1)[0]
            fits = (
                f" {count} of them sit where {name} puts their key ({PRODUCERS[name]}): if those are your "
                f"producers, set EVENT_PARTITIONER={name} on the processor, gateway and simulator."
            )
        log.warning(
            "%d record(s) sat in a partition their key does not hash to under EVENT_PARTITIONER=%s and "
            "went to the DLQ as key_mismatch.%s Otherwise set the producers' partitioner to %s (%s). "
            "At most one such warning a minute; each record is counted in concurrency_key_mismatch_total",
            self._unreported,
            self._partitioner,
            fits,
            self._partitioner,
            PRODUCERS[self._partitioner],
            extra={"key_mismatches": self._unreported, "event_partitioner": self._partitioner},
        )
        self.warnings += 1
        self._unreported = 0
        self._fits.clear()
