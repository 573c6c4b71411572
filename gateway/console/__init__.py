"""The support console served by the gateway under /console (the contract's last section):
routes.py (HTTP, headers, auth), service.py (the views and the terminate), ledger.py and
ledger_follower.py (the verdicts topic indexed), support_auth.py (role=support tokens),
settings.py (CONSOLE_*), static/ (the page, its script and style sheet)."""
