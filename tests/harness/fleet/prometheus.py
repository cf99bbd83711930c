"""A real Prometheus scraping the fleet emulator through ``file_sd`` targets.

Reuses the launcher of the ``tests/real`` suite (Debian's prometheus 2.42, every
second); only the scrape configuration differs: one job whose targets come from a
file the emulator rewrites from the pod list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness.real.servers import PrometheusServer


@dataclass
class FileSDPrometheus(PrometheusServer):
    sd_file: Path = Path("targets.json")

    def scrape_configs(self) -> list[dict[str, object]]:
        return [
            {
                "job_name": "triton",
                "file_sd_configs": [{"files": [str(self.sd_file)], "refresh_interval": "1s"}],
            }
        ]
