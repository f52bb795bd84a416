"""MLflow tracking for the CLI layer. Tracking must never cost a training: every call is guarded,
the first failure is reported once on stderr, later calls become no-ops, and everything stays in
the run folder regardless."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Tracker:
    """A thin, failure-tolerant wrapper around one MLflow run."""

    def __init__(self, uri: str, experiment: str, enabled: bool = True) -> None:
        self.uri = uri
        self.experiment = experiment
        self.enabled = enabled
        self.run_id: str | None = None
        self._warned = False
        self._client = None

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._warned:
            print(f"warning: MLflow tracking disabled for this job ({what}: {type(exc).__name__}: {exc}); "
                  "results stay in the run folder", file=sys.stderr)  # fmt: skip
            self._warned = True
        self.enabled = False

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracking error must not stop the job
            self._fail(what, exc)
            return None

    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment_id(self) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(self.experiment)
        except Exception:  # another job created it concurrently
            return client.get_experiment_by_name(self.experiment).experiment_id

    def start(
        self,
        name: str,
        run_id: str | None = None,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str | None:
        """Continue ``run_id`` if given (resume), else create a run (child of ``parent_id``)."""

        def _start() -> str:
            client = self.client()
            if run_id:
                client.update_run(run_id, status="RUNNING")
                return run_id
            all_tags = {"mlflow.runName": name, **(tags or {})}
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            return client.create_run(
                self._experiment_id(), tags=all_tags, run_name=name
            ).info.run_id

        self.run_id = self._guard("start run", _start)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        def _log() -> None:
            existing = self.client().get_run(self.run_id).data.params
            items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
            for i in range(0, len(items), 90):
                self.client().log_batch(self.run_id, params=items[i : i + 90])

        if self.run_id:
            self._guard("log params", _log)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        if self.run_id and items:
            self._guard("log metrics", lambda: self.client().log_batch(self.run_id, metrics=items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id and Path(path).exists():
            self._guard(
                "log artifact",
                lambda: self.client().log_artifact(self.run_id, str(path), artifact_path),
            )

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self._guard(
                "set tags",
                lambda: [self.client().set_tag(self.run_id, k, v) for k, v in tags.items()],
            )

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._guard("end run", lambda: self.client().set_terminated(self.run_id, status=status))


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout, or no git
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
