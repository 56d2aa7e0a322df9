"""The README's MLflow screenshot: a small sweep tracked in the embedded store, compared in
MLflow's UI, captured by headless Chromium. Run by hand (not by the tests):

    python docs/screenshot_mlflow.py [--out docs/mlflow_sweep.png]

Needs the tracking extra (`pip install -e '.[tracking]'`) and Debian's chromium
(`apt-get install chromium`). Everything runs on 127.0.0.1 in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
SWEEP = [
    "-m",
    "tracking=mlflow",
    "tracking.experiment=digits-targets",
    "target=ethos-u55-128,ethos-u65-256,ethos-u85-256",
    "quantization=int8,a16w8",
    "budget.max_sram_kib=28",  # U65-256 (both schemes) and U85-256 a16w8 breach it: FAILED runs
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer in {seconds} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("mlflow_sweep.png")))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ethosu-mlflow-"))
    store = work / "store"
    subprocess.run([str(BIN / "ethosu-build"), *SWEEP, f"store.root={store}"], cwd=work)  # exits 3: one breach

    port = free_port()
    db = f"sqlite:///{store / 'tracking' / 'mlflow.db'}"
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", db, "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(base)
        exp = client.get_experiment_by_name("digits-targets")
        runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
        query = urllib.parse.urlencode(
            {"runs": json.dumps([r.info.run_id for r in runs]), "experiments": json.dumps([exp.experiment_id])}
        )
        url = f"{base}/#/compare-runs?{query}"
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={work / 'chromium'}", "--window-size=1900,1300", "--virtual-time-budget=30000",
             f"--screenshot={Path(args.out).resolve()}", url],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"{args.out}: {len(runs)} runs compared ({url})")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
