"""What the support console logs at INFO: the server decides, not the page (gateway/console/routes.py)."""

from __future__ import annotations

import logging

from gateway.console.routes import LookupAudit


def test_a_lookup_is_audited_at_info_then_its_refreshes_at_debug_until_the_window_passes():
    now = [1000.0]
    audit = LookupAudit(clock=lambda: now[0])
    assert audit.level("support:alice", "u1") == logging.INFO
    now[0] += 2
    assert audit.level("support:alice", "u1") == logging.DEBUG  # the page's refresh
    assert audit.level("support:bob", "u1") == logging.INFO  # another agent
    assert audit.level("support:alice", "u2") == logging.INFO  # another account
    now[0] += LookupAudit.REPEAT_S
    assert audit.level("support:alice", "u1") == logging.INFO  # audited again


def test_the_audit_memory_is_bounded_and_starts_over_at_info():
    audit = LookupAudit(clock=lambda: 0.0)
    for i in range(LookupAudit.MAX_KEYS):
        assert audit.level("support:alice", f"u{i}") == logging.INFO
    assert audit.level("support:alice", "u0") == logging.DEBUG
    assert audit.level("support:alice", "one-more") == logging.INFO  # over the bound: cleared
    assert audit.level("support:alice", "u0") == logging.INFO
    assert len(audit._last) == 2
