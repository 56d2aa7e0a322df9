"""The artifact store and stage cache on their own: versions, reuse, atomicity, corruption."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from ethosu_build.cache import StageCache
from ethosu_build.store import ArtifactStore


def _publish(root: str, name: str, key: str, payload: bytes) -> int:
    store = ArtifactStore(root)
    staging = store.staging(name)
    (staging / "model.pte").write_bytes(payload)
    artifact, _ = store.publish(name, key, staging, lambda v, files: {"build_key": key, "version": v, "files": files})
    return artifact.version


def test_same_key_reuses_the_version_new_key_gets_the_next(tmp_path):
    assert _publish(tmp_path, "m", "k1", b"a") == 1
    assert _publish(tmp_path, "m", "k1", b"a") == 1
    assert _publish(tmp_path, "m", "k2", b"b") == 2
    assert _publish(tmp_path, "other", "k2", b"b") == 1
    names = sorted(p.name for p in (tmp_path / "artifacts" / "m").iterdir())
    assert names == [".lock", "v1", "v2"]  # no staging folder left behind
    m = json.loads((tmp_path / "artifacts" / "m" / "v2" / "manifest.json").read_text())
    assert m["files"]["model.pte"]["size"] == 1


def test_concurrent_publishers_never_share_a_version(tmp_path):
    jobs = [(str(tmp_path), "m", f"k{i % 5}", bytes([i % 5])) for i in range(20)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(_publish, jobs)
    store = ArtifactStore(tmp_path)
    stored = store.versions("m")
    assert [a.version for a in stored] == [1, 2, 3, 4, 5]
    keys = [a.manifest()["build_key"] for a in stored]
    assert sorted(keys) == [f"k{i}" for i in range(5)]
    by_key = {a.manifest()["build_key"]: a.version for a in stored}
    assert versions == [by_key[k] for _, _, k, _ in jobs]


def test_a_killed_build_leaves_nothing_listed(tmp_path):
    store = ArtifactStore(tmp_path)
    staging = store.staging("m")
    (staging / "model.pte").write_bytes(b"half")  # the process dies here
    assert list(store.all()) == []
    assert _publish(tmp_path, "m", "k", b"x") == 1


def test_cache_entry_round_trip_and_corruption(tmp_path):
    cache = StageCache(tmp_path)
    key = "ab" * 32
    assert cache.get(key) is None
    with cache.put(key, "test") as d:
        (d / "x.bin").write_bytes(b"payload")
    entry = cache.get(key)
    assert entry is not None and (entry / "x.bin").read_bytes() == b"payload"
    (entry / "x.bin").write_bytes(b"tampered")
    assert cache.get(key) is None
    assert not cache.path(key).exists()  # deleted, never trusted


def test_cache_writer_that_fails_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path)
    key = "cd" * 32
    try:
        with cache.put(key, "test") as d:
            (d / "x.bin").write_bytes(b"partial")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert cache.get(key) is None
    assert list(Path(cache.path(key)).parent.iterdir()) == []
