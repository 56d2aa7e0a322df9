"""Builds and sweeps in MLflow (`tracking=mlflow`, docs/tracking.md): one run per build, a
parent run per sweep with a child per job, read from what the build stored.

- A run holds params (the composed group choices and the overrides typed, flat), metrics
  (config/objective.py's table, Vela's totals and per-partition figures, accuracy, the TOSA
  check, the memory bill), tags (artifact id, build key, git commit and dirty flag, tool
  versions, status) and artifacts (report.md, manifest.json, config.yaml, the Vela CSVs and,
  unless tracking.log_model=false, model.pte).
- A job that stored nothing (failed, over a budget, a config error) is a run too, FAILED,
  with its status, message and, for a budget, what it measured.
- An up-to-date build makes no second run: it finds the earlier run by build key and says so.
- Tracking never breaks a build: any error here (no server, a refused upload) is one
  warning; the build, its exit code and the store are unaffected.
- The default URI is an embedded store under store.root (SQLite, with artifacts beside
  it): no server, works on a fresh clone. `ethosu-artifacts track ID...` logs stored
  artifacts later.

MLflow is imported only here, only when tracking is on: `pip install -e '.[tracking]'`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .config import objective

log = logging.getLogger("ethosu_build")

EXTRA = "pip install -e '.[tracking]' (or pip install 'ethosu-build[tracking]')"
BUILD_KEY_TAG = "ethosu_build.build_key"
PARENT_FILE = "tracking.json"  # in a sweep dir: the parent run the jobs attach to
# A tracker that cannot be reached must cost a build seconds, not MLflow's default minutes of
# retries with backoff.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # fmt: skip


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def default_uri(store_root: str | Path) -> str:
    """The embedded store: SQLite under the store root (no server)."""
    return "sqlite:///" + str(_tracking_dir(store_root) / "mlflow.db")


def _tracking_dir(store_root: str | Path) -> Path:
    return Path(os.path.expanduser(str(store_root))).resolve() / "tracking"


class Tracker:
    """One MLflow client for one tracking config (a `TrackingConfig` as a dict)."""

    def __init__(self, tracking: dict[str, Any], store_root: str | Path):
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from mlflow.tracking import MlflowClient

        self.uri = tracking.get("uri") or default_uri(store_root)
        self.embedded = not tracking.get("uri")
        if self.embedded:
            _tracking_dir(store_root).mkdir(parents=True, exist_ok=True)
        self.log_model = tracking.get("log_model", True)
        self.experiment_name = tracking.get("experiment")
        self.store_root = store_root
        self.client = MlflowClient(tracking_uri=self.uri)

    def experiment(self, name: str) -> str:
        """The experiment's id, created if new (artifacts beside an embedded store)."""
        name = self.experiment_name or name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (_tracking_dir(self.store_root) / "artifacts").as_uri() if self.embedded else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another job created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def find(self, experiment_id: str, build_key: str):
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{BUILD_KEY_TAG}` = '{build_key}'", max_results=1
        )
        return runs[0] if runs else None

    # --- runs ---------------------------------------------------------------------------------

    def log_artifact(
        self, artifact_path: Path, manifest: dict[str, Any], status: str, context: dict[str, Any]
    ) -> tuple[str, bool]:
        """A run for a stored artifact, or the earlier run of the same build key: (its id,
        whether it was logged now)."""
        experiment = self.experiment(context.get("experiment") or manifest["name"])
        if status in ("up_to_date", "stored"):  # the same build again: its earlier run
            earlier = self.find(experiment, manifest["build_key"])
            if earlier is not None:
                log.info("tracking: up to date, already tracked as run %s (%s)", earlier.info.run_id, self.uri)
                return earlier.info.run_id, False
        run = self._create(experiment, context, run_name=f"{manifest['name']}/v{manifest['version']}")
        rid = run.info.run_id
        params = {**context.get("params", {}), **_config_params(manifest)}
        tags = {**_tags(manifest), "ethosu_build.status": status}
        self._batch(rid, metrics(manifest), params, tags)
        for name in ("report.md", "manifest.json", "config.yaml"):
            if (artifact_path / name).is_file():
                self.client.log_artifact(rid, str(artifact_path / name))
        for csv in sorted((artifact_path / "vela").glob("*.csv")):
            self.client.log_artifact(rid, str(csv), "vela")
        if (artifact_path / "layers.png").is_file():  # evaluation.per_layer: the plot along the network
            self.client.log_artifact(rid, str(artifact_path / "layers.png"))
        if self.log_model:
            self.client.log_artifact(rid, str(artifact_path / "model.pte"))
        self.client.set_terminated(rid, "FINISHED")
        log.info("tracking: run %s in experiment %s (%s)", rid, experiment, self.uri)
        return rid, True

    def log_failure(self, row: dict[str, Any], measured: dict[str, Any] | None, context: dict[str, Any]) -> str:
        """A run for a job that stored nothing: FAILED, with its status and message."""
        experiment = self.experiment(context.get("experiment") or row.get("model") or "ethosu-build")
        where = " ".join(str(row[k]) for k in ("model", "target", "scheme") if row.get(k))
        run = self._create(experiment, context, run_name=f"{where or 'job'} ({row['status']})")
        rid = run.info.run_id
        tags = {"ethosu_build.status": row["status"], "ethosu_build.error": str(row.get("error", ""))[:5000]}
        what = {k: row.get(k) for k in ("model", "target", "scheme") if row.get(k) is not None}
        self._batch(rid, metrics(measured or {}), {**context.get("params", {}), **what}, tags)
        self.client.set_terminated(rid, "FAILED")
        log.info("tracking: failed job logged as run %s (%s)", rid, self.uri)
        return rid

    def _create(self, experiment: str, context: dict[str, Any], run_name: str):
        tags = {}
        if context.get("parent_run_id"):
            tags["mlflow.parentRunId"] = context["parent_run_id"]
        return self.client.create_run(experiment, tags=tags, run_name=run_name)

    def _batch(self, rid: str, values: dict[str, float], params: dict[str, Any], tags: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        ms = [Metric(k, float(v), now, 0) for k, v in values.items()]
        ps = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        for i in range(0, max(len(ms), len(ps), len(ts), 1), 100):  # MLflow's batch limits
            self.client.log_batch(rid, metrics=ms[i : i + 100], params=ps[i : i + 100], tags=ts[i : i + 100])

    # --- sweeps -------------------------------------------------------------------------------

    def start_sweep(self, sweep_dir: Path, name: str, params: dict[str, Any]) -> str:
        experiment = self.experiment(name)
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
        run = self.client.create_run(experiment, run_name=name, tags={"ethosu_build.sweep_dir": str(sweep_dir)})
        self._batch(run.info.run_id, {}, params, {})
        return run.info.run_id

    def end_sweep(self, run_id: str, summary) -> None:
        for f in summary.files:
            if f.suffix in (".csv", ".md", ".png"):
                self.client.log_artifact(run_id, str(f))
            elif f.suffix == ".yaml":
                self.client.log_artifact(run_id, str(f), "recipe")
        counts = {"jobs": len(summary.rows), "jobs_failed": len(summary.failed)}
        self._batch(run_id, counts, {}, {"ethosu_build.summary": summary.line()})
        self.client.set_terminated(run_id, "FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def metrics(m: dict[str, Any]) -> dict[str, float]:
    """Flat, numeric: the objective table's metrics, Vela's totals and each partition's
    figures prefixed `partition<i>.`, accuracy, the TOSA check, the memory bill's parts."""
    out: dict[str, Any] = dict(objective.row_metrics(m))
    metrics_ = m.get("metrics") or {}
    vela = metrics_.get("vela") or {}
    for k, v in (vela.get("total") or {}).items():
        out[f"vela.{k}"] = v
    for i, p in enumerate(vela.get("partitions") or []):
        for k, v in p.items():
            out[f"partition{i}.{k}"] = v
    for k, v in (metrics_.get("accuracy") or {}).items():
        out[f"accuracy.{k}"] = v
    for k, v in (metrics_.get("tosa_check") or {}).items():
        out[f"tosa_check.{k}"] = v
    memory = m.get("memory") or {}
    for k, v in (memory.get("regions") or {}).items():
        out[f"memory.{k}_bytes"] = v
    for k, v in (memory.get("parts") or {}).items():
        if isinstance(v, dict):
            out[f"memory.{k}_bytes"] = v.get("bytes")
    d = m.get("delegation") or {}
    for k in ("npu_partitions", "npu_ops", "cpu_op_count", "cpu_compute_op_count"):
        out[f"delegation.{k}"] = d.get(k)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _config_params(m: dict[str, Any]) -> dict[str, Any]:
    cfg = m.get("config") or {}
    return {
        "model": (cfg.get("model") or {}).get("name"),
        "target": (cfg.get("target") or {}).get("accelerator"),
        "scheme": (cfg.get("quantization") or {}).get("scheme"),
        "recipe": m.get("recipe"),
    }


def _tags(m: dict[str, Any]) -> dict[str, Any]:
    git = ((m.get("provenance") or {}).get("git")) or {}
    tags = {
        "ethosu_build.artifact": f"{m['name']}/v{m['version']}",
        BUILD_KEY_TAG: m["build_key"],
        "ethosu_build.pte_sha256": (m.get("files") or {}).get("model.pte", {}).get("sha256"),
        "mlflow.source.git.commit": git.get("commit"),
        "ethosu_build.git_dirty": git.get("dirty"),
    }
    for tool, version in (m.get("tools") or {}).items():
        tags[f"tool.{tool}"] = version
    return {k: v for k, v in tags.items() if v is not None}


def job_params(choices: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The composed group choices (`choice.target`) and the overrides typed (`override.<key>`)."""
    params = {f"choice.{g}": v for g, v in choices.items() if not str(g).startswith("hydra") and v is not None}
    for o in overrides:
        key, _, value = o.partition("=")
        params[f"override.{key.lstrip('+~')}"] = value
    return params


# --- the hooks the CLI calls; each one only warns --------------------------------------------


def warn(what: str, exc: BaseException) -> None:
    log.warning("tracking: %s failed (%s: %s); the build and the store are unaffected", what, type(exc).__name__, exc)


def _enabled(tracking: Any) -> bool:
    return isinstance(tracking, dict) and tracking.get("backend") == "mlflow"


def track_job(container: dict[str, Any] | None, hc, overrides: list[str], row: dict[str, Any], result=None,
              exc: BaseException | None = None) -> None:  # fmt: skip
    """After a job (app.build_app): its run, child of the sweep's parent run in a multirun."""
    tracking = (container or {}).get("tracking")
    if not _enabled(tracking):
        return
    try:
        from hydra.types import RunMode

        tracker = Tracker(tracking, container["store"]["root"])
        context: dict[str, Any] = {"params": job_params(dict(hc.runtime.choices), overrides)}
        if hc.mode == RunMode.MULTIRUN:
            out = Path(str(hc.runtime.output_dir))
            sweep_dir = out.parents[len(Path(str(hc.sweep.subdir)).parts) - 1]
            parent = _read_parent(sweep_dir)
            context["parent_run_id"], context["experiment"] = parent.get("run_id"), parent.get("experiment")
        if result is not None:
            tracker.log_artifact(result.artifact.path, result.artifact.manifest(), row["status"], context)
        else:
            measured = getattr(exc, "measured", None)
            tracker.log_failure(row, measured, context)
    except Exception as e:  # noqa: BLE001 (tracking never breaks a build)
        warn("logging the run", e)


def _read_parent(sweep_dir: Path) -> dict[str, Any]:
    try:
        found = json.loads((sweep_dir / PARENT_FILE).read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _sweep_experiment(config) -> str:
    from omegaconf import OmegaConf

    named = OmegaConf.select(config, "tracking.experiment") or OmegaConf.select(config, "name")
    recipe = OmegaConf.select(config, "hydra.runtime.choices.recipe")
    return str(named or (recipe if recipe not in (None, "null") else None) or OmegaConf.select(config, "model.name"))


def start_sweep(config, sweep_dir: Path) -> None:
    """Before the first job (SweepCallback): the sweep's parent run, named in the sweep dir."""
    from omegaconf import OmegaConf

    tracking = OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else None
    if not _enabled(tracking):
        return
    try:
        tracker = Tracker(tracking, str(config.store.root))
        experiment = _sweep_experiment(config)
        params = {"sweep.overrides": " ".join(config.hydra.overrides.task), "sweep.dir": str(sweep_dir)}
        run_id = tracker.start_sweep(sweep_dir, experiment, params)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from .files import atomic_write_json

        atomic_write_json(sweep_dir / PARENT_FILE, {"run_id": run_id, "experiment": experiment, "uri": tracker.uri})
        log.info("tracking: sweep run %s in experiment %s (%s)", run_id, experiment, tracker.uri)
    except Exception as e:  # noqa: BLE001
        warn("starting the sweep's run", e)


def end_sweep(config, summary) -> None:
    """After the summary (SweepCallback): the summary's files on the parent run, which ends."""
    parent = _read_parent(summary.sweep_dir)
    if not parent.get("run_id"):
        return
    from omegaconf import OmegaConf

    try:
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        Tracker(tracking, str(config.store.root)).end_sweep(parent["run_id"], summary)
    except Exception as e:  # noqa: BLE001
        warn("closing the sweep's run", e)
