"""The control-API client shared by EmulatorServer and EmulatorProcess, and EmulatorProcess itself.

Both drive the emulator through the same unauthenticated HTTP control API under ``/_emulator/``
(never faulted, never rate limited, not in the request log).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .faults import FaultConfig
from .keys import KEYS, PROJECT_ID

REPO_ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


class ControlClient:
    url: str = ""

    def __init__(self) -> None:
        self.url = ""

    @property
    def api_key(self) -> str:
        return KEYS["all_access"]

    @property
    def project_id(self) -> int:
        return PROJECT_ID

    def _control(self, method: str, name: str, body: Any = None, query: str = "", timeout: float = 600) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(f"{self.url}/_emulator/{name}{query}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"emulator control {method} {name} failed: {e.code} {e.read()[:500]!r}") from None

    def health(self) -> dict:
        return self._control("GET", "health")

    def ground_truth(self, stream: str | None = None, visible_only: bool = False, project_id: int | None = None) -> Any:
        """Primary keys of everything the all_access key can read for PROJECT_ID, or `project_id`
        (or one stream). Events: every row (default), or with ``visible_only`` only those queryable now."""
        args = [f"stream={stream}"] if stream else []
        if visible_only:
            args.append("visible=now")
        if project_id is not None:
            args.append(f"project_id={project_id}")
        return self._control("GET", "ground_truth", query="?" + "&".join(args) if args else "")

    def mutate(self, **kwargs: Any) -> dict:
        """See ``Store.mutate``; ``visibility_delay_seconds=d`` stages events queryable only at created_at + d."""
        return self._control("POST", "mutate", kwargs)

    def add_events(self, rows: list[dict], visibility_delay_seconds: float | None = None, project_id: int | None = None) -> list[str]:
        body: dict = {"events": rows}
        if project_id is not None:
            body["project_id"] = project_id
        if visibility_delay_seconds is not None:
            body["visibility_delay_seconds"] = visibility_delay_seconds
        return self._control("POST", "events", body)["uuids"]

    def move_events(self, to_project: int, every: int = 2) -> int:
        """Move every `every`-th event of project 2 to `to_project` (see ``Store.move_events``)."""
        return self._control("POST", "move_events", {"to_project": to_project, "every": every})["moved"]

    def set_visibility_delay(self, seconds: float) -> None:
        """The run-wide delay: rows without a batch delay are queryable at created_at + seconds."""
        self._control("POST", "visibility", {"delay_seconds": seconds})

    def conditions(self) -> dict:
        return self._control("GET", "conditions")

    def set_conditions(self, reset_budget: bool = False, **changes: Any) -> dict:
        """Change query conditions at run time: cost_model, time_scale, overhead_seconds, seconds_per_row,
        seconds_per_byte, max_execution_seconds, concurrency_limit, concurrency, queue_timeout,
        budget_bytes_per_hour, budget_capacity_bytes (see conditions.QueryConditions)."""
        return self._control("POST", "conditions", {**changes, "reset_budget": reset_budget})

    def query_stats(self) -> dict:
        """{"peak_concurrency", "peak_in_flight", "queries", "succeeded", "throttled_concurrency", ...}"""
        return self._control("GET", "query_stats")

    def reset_query_stats(self) -> None:
        self._control("DELETE", "query_stats")

    def requests(self) -> list[dict]:
        return self._control("GET", "requests")

    def clear_requests(self) -> None:
        self._control("DELETE", "requests")

    def set_faults(self, faults: FaultConfig | None) -> None:
        self._control("POST", "faults", (faults or FaultConfig()).to_dict())

    def set_rate_limits(self, enabled: bool = True, scale: float | None = None) -> None:
        self._control("POST", "rate_limits", {"enabled": enabled, "scale": scale})

    # -- file-download exports (exports.py; README "File-download exports") --------------------------

    def exports(self) -> dict:
        """Every export run with its stored and shown status, files, schedule; settings; planned outcomes."""
        return self._control("GET", "exports")

    def export_run(self, run_id: str) -> dict:
        return self._control("GET", f"exports/{run_id}")

    def advance_export(self, run_id: str, to: str | None = None, timeout: float = 30) -> dict:
        """Skip the run's waits up to ``to`` (Running, Queried, Completed, Files; default: the next stage)."""
        return self._control("POST", f"exports/{run_id}/advance", {"to": to, "timeout": timeout})

    def set_export_status(self, run_id: str, status: str, **error: Any) -> dict:
        """Force a status now (``error="..."`` overrides PostHog's text for it; Completed = advance to Files)."""
        return self._control("POST", f"exports/{run_id}/status", {"status": status, **error})

    def plan_export_outcomes(self, status: str, count: int = 1, at: str = "end", **error: Any) -> list:
        """The next ``count`` runs end with ``status`` (Failed, FailedRetryable, FailedBilling, TimedOut,
        Terminated, Cancelled); ``at="start"`` (Failed only): the POST answers 500 "failed to start"."""
        return self._control("POST", "exports/outcomes", {"status": status, "count": count, "at": at, **error})["outcomes"]

    def clear_export_outcomes(self) -> None:
        self._control("DELETE", "exports/outcomes")

    def expire_export_links(self, run_id: str | None = None) -> None:
        """Every presigned link issued so far (for the run, or all) answers S3's "Request has expired"."""
        self._control("POST", "exports/expire_links", {"run_id": run_id})

    def expire_export_files(self, run_id: str) -> dict:
        """The run's files pass their lifecycle expiry: download 400, objects gone (S3 403)."""
        return self._control("POST", f"exports/{run_id}/expire_files", {})

    def object_store_requests(self) -> list[dict]:
        """Requests the object-store host received (headers masked), with status and S3 error code."""
        return self._control("GET", "exports/object_store/requests")

    def clear_object_store_requests(self) -> None:
        self._control("DELETE", "exports/object_store/requests")

    def export_settings(self, **changes: Any) -> dict:
        """Read (no arguments) or change the ExportSettings at run time."""
        return self._control("POST" if changes else "GET", "exports/settings", changes or None)


class EmulatorProcess(ControlClient):
    """The emulator in a separate process (``python -m tools.emulator``), for benchmarks."""

    def __init__(self, config=None, startup_timeout: float = 900.0, python: str | None = None):
        super().__init__()
        from .config import EmulatorConfig

        self.config = config or EmulatorConfig()
        self.startup_timeout = startup_timeout
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    def start(self) -> "EmulatorProcess":
        cmd = [self.python, "-m", "tools.emulator", "--port", "0", *self.config.to_cli_args()]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        text = line[0].decode().strip() if line else ""
        if not text.startswith("READY "):
            self.stop()
            raise RuntimeError(f"emulator process did not start (got {text!r}); stderr:\n{self._stderr_tail()}")
        self.url = text.split(" ", 1)[1]
        return self

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-4000:]
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "EmulatorProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
