"""Debian's ``chromium`` and ``chromium-driver`` for the support console's browser tests
(installed when missing and root, as ``redis-server`` is; DESIGN.md: "A real browser")."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from compose.managed import LauncherError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ["chromium", "chromium-driver"]


def _found() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    driver = shutil.which("chromedriver") or (CHROMEDRIVER if Path(CHROMEDRIVER).exists() else None)
    return (browser, driver) if browser and driver else None


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths; installs the Debian packages when missing and root."""
    found = _found()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        ):
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise LauncherError(f"`{' '.join(cmd)}` failed:\n{(res.stdout + res.stderr)[-3000:]}")
        found = _found()
        if found:
            return found
    raise LauncherError(
        "chromium and chromedriver not found (the support console's browser tests need them): "
        "`sudo apt-get update && sudo apt-get install -y chromium chromium-driver` (Debian/Ubuntu)"
    )
