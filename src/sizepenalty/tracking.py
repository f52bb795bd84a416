"""MLflow tracking for the CLI layer. Tracking must never cost a training: every call is guarded,
the first failure is reported once on stderr, later calls become no-ops, and everything stays in
the run folder regardless."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "database is locked" in text or "database is busy" in text or "sqlite_busy" in text


class Tracker:
    """A thin, failure-tolerant wrapper around one MLflow run.

    ``artifact_location`` is used only when this tracker creates the experiment.
    """

    RETRIES = 6

    def __init__(
        self, uri: str, experiment: str, enabled: bool = True, artifact_location: str | None = None
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
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
        for attempt in range(self.RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any tracking error must not stop the job
                # Concurrent jobs on one SQLite file can briefly find it locked: wait and retry
                # before giving up on tracking for this job.
                if attempt < self.RETRIES and _transient(exc):
                    time.sleep(0.2 * 2**attempt)
                    continue
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
            return client.create_experiment(
                self.experiment, artifact_location=self.artifact_location
            )
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


def test_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``test_<metric>``: the mean over a fold's test cases of every numeric per-case metric."""
    import math

    sums: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            if k in ("fold", "threshold") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(float(v)):
                sums.setdefault(k, []).append(float(v))
    return {f"test_{k}": sum(v) / len(v) for k, v in sums.items() if v}


RUN_COLUMNS = ("run", "combo", "fold", "status", "epochs", "minutes", "run_id", "experiment_id")


def run_table(client, experiment: str, parent_id: str | None, metrics: list[str]):
    """One row per training run of ``experiment`` (children of ``parent_id`` when given): name,
    combination, fold, status, epochs logged, wall minutes and the requested metrics (latest
    values), sorted by combination and fold. ``None`` when the experiment does not exist."""
    import pandas as pd

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"tags.mlflow.parentRunId = '{parent_id}'" if parent_id else "params.combo != ''"
    runs = client.search_runs([exp.experiment_id], query, max_results=5000)
    rows = []
    for r in runs:
        end = r.info.end_time or r.info.start_time
        row = {
            "run": r.info.run_name,
            "combo": r.data.params.get("combo", ""),
            "fold": int(r.data.params.get("fold", -1)),
            "status": r.info.status,
            "epochs": len(client.get_metric_history(r.info.run_id, "train_loss")),
            "minutes": round((end - r.info.start_time) / 60000, 2),
            "run_id": r.info.run_id,
            "experiment_id": r.info.experiment_id,
        }
        row.update({m: r.data.metrics.get(m, float("nan")) for m in metrics})
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *metrics])
    return table.sort_values(["combo", "fold"], kind="stable").reset_index(drop=True)


def compare_runs(tracker: Tracker, parent_id: str, metrics: list[str] | None = None):
    """:func:`run_table` for a study's parent run, or ``None`` when tracking fails."""
    metrics = metrics or ["best_val_dice", "test_dice", "test_pq", "test_rve"]
    return tracker._guard(
        "compare runs", run_table, tracker.client(), tracker.experiment, parent_id, metrics
    )


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
