"""A local Prometheus (Debian's binary, unpacked by ops/prometheus-binaries.sh) scraping given
targets with the project's alert rules: what tests/integration/test_ops_live_prometheus.py runs
to load the rules and evaluate the dashboard's queries against a real processor and gateway."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import yaml

from compose.managed import COMPOSE_DIR, ManagedProcess, free_port

CACHED_PROMETHEUS = COMPOSE_DIR / ".cache" / "prometheus" / "prometheus"


def find_prometheus() -> str | None:
    """The prometheus binary: the one make system-deps unpacked, else one on PATH."""
    if CACHED_PROMETHEUS.is_file():
        return str(CACHED_PROMETHEUS)
    return shutil.which("prometheus")


class PrometheusServer(ManagedProcess):
    """Prometheus on a free port of 127.0.0.1, scraping `jobs` ({job name: ["host:port"]}) every
    `interval`, evaluating `rule_files` as often."""

    name = "prometheus"

    def __init__(
        self,
        data_dir: Path | str,
        jobs: dict[str, list[str]],
        rule_files: list[Path],
        interval: str = "1s",
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.binary = binary or find_prometheus()
        if self.binary is None:
            raise FileNotFoundError("prometheus not found: run `make system-deps`")
        self.jobs = jobs
        self.rule_files = rule_files
        self.interval = interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(path.resolve()) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.jobs.items()
            ],
        }
        (self.data_dir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def _command(self) -> list[str]:
        return [
            self.binary,  # type: ignore[list-item]
            f"--config.file={self.data_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TimeoutError(f"prometheus exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("prometheus did not answer /-/ready")
