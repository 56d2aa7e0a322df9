"""`ethosu-artifacts track ID...`: log checked artifacts to MLflow, as a build with
tracking=mlflow would have (tracking.py). MLflow is imported inside `run`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore, snapshot
from .common import ID_HELP, Command, _changed_after_check, _checked, _resolve


def run(store: ArtifactStore, args) -> int:
    """Log stored artifacts to MLflow, as a build with tracking=mlflow would have (tracking.py):
    the way to backfill a store built before tracking was on. One already tracked under its
    build key is not logged again."""
    from .. import tracking
    from ..errors import TrackingError

    if not tracking.available():
        raise UsageError(ConfigIssue("track", f"mlflow is not installed; accepted: {tracking.EXTRA}"))
    artifacts = [_resolve(store, ref, "ID") for ref in args.ids]
    checks = [_checked(a, "ID", "tracking") for a in artifacts]  # nothing is taken as good unchecked
    if args.experiment is not None and not args.experiment.strip():
        raise UsageError(ConfigIssue("--experiment", "is empty; accepted: an experiment name"))
    settings = {"backend": "mlflow", "uri": args.uri, "experiment": args.experiment, "log_model": not args.no_model}
    try:
        tracker = tracking.Tracker(settings, store.root)
        for a, checked in zip(artifacts, checks):
            with tempfile.TemporaryDirectory(prefix="ethosu-track-") as tmp, _changed_after_check(a, "ID"):
                copy_ = snapshot(a, checked, Path(tmp))  # the checked bytes are logged
                rid, logged = tracker.log_artifact(copy_.path, checked.manifest, "stored", {})
            print(f"{a.id}: {'run' if logged else 'already tracked as run'} {rid} ({tracker.uri})")
    except Exception as exc:  # the tracker's own errors: name them, keep the store as it is
        raise TrackingError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return EXIT_OK


def _arguments(p) -> None:
    p.add_argument("ids", nargs="+", metavar="ID", help=ID_HELP)
    p.add_argument("--uri", default=None, help="tracking URI; default: the embedded store under --root")
    p.add_argument("--experiment", default=None, help="MLflow experiment; default: each artifact's name")
    p.add_argument("--no-model", action="store_true", help="do not upload model.pte")


COMMAND = Command(
    "track",
    "log stored artifacts to MLflow (backfill a store built without tracking)",
    ("ethosu-artifacts track digits_cnn --uri http://127.0.0.1:5000",),
    _arguments,
    run,
)
