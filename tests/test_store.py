"""The artifact store and stage cache on their own: versions, reuse, atomicity, corruption."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from conftest import new_key_file

from ethosu_build.store.artifacts import ArtifactStore, NotAnArtifact
from ethosu_build.store.cache import StageCache
from ethosu_build.store.trust import KEY_ENV


def _publish(root: str, name: str, key: str, payload: bytes) -> int:
    store = ArtifactStore(root)
    staging = store.staging(name)
    (staging / "model.pte").write_bytes(payload)
    artifact, _ = store.publish(
        name,
        key,
        staging,
        lambda v, files: {"name": name, "build_key": key, "version": v, "files": files, "config": {}},
    )
    return artifact.version


def test_same_key_reuses_the_version_new_key_gets_the_next(tmp_path):
    assert _publish(tmp_path, "m", "k1", b"a") == 1
    assert _publish(tmp_path, "m", "k1", b"a") == 1
    assert _publish(tmp_path, "m", "k2", b"b") == 2
    assert _publish(tmp_path, "other", "k2", b"b") == 1
    names = sorted(p.name for p in (tmp_path / "artifacts" / "m").iterdir())
    assert names == [".last-version", ".lock", "v1", "v2"]  # no staging folder left behind
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
    assert entry is not None and entry.read("x.bin") == b"payload"
    (entry.path / "x.bin").write_bytes(b"tampered")
    assert cache.get(key) is None
    assert not cache.path(key).exists()  # deleted, never trusted


def _entry(cache: StageCache, key: str) -> Path:
    with cache.put(key, "test") as d:
        (d / "x.bin").write_bytes(b"payload")
    return cache.path(key)


def test_an_entry_whose_listing_a_store_writer_rewrote_is_not_trusted(tmp_path):
    """entry.json's hashes are no defence against someone who can write the store: they
    can recompute them. Only the signature, under a key outside the store, counts."""
    cache = StageCache(tmp_path)
    key = "cd" * 32
    path = _entry(cache, key)
    (path / "x.bin").write_bytes(b"planted")
    meta = json.loads((path / "entry.json").read_text())
    meta["files"]["x.bin"] = hashlib.sha256(b"planted").hexdigest()
    (path / "entry.json").write_text(json.dumps(meta))
    assert cache.get(key) is None and not path.exists()
    path = _entry(cache, key)
    meta = json.loads((path / "entry.json").read_text())
    del meta["signature"]
    (path / "entry.json").write_text(json.dumps(meta))
    assert cache.get(key) is None


def test_an_entry_signed_with_another_key_is_not_trusted(tmp_path, monkeypatch):
    cache = StageCache(tmp_path / "store")
    key = "ef" * 32
    _entry(cache, key)
    assert cache.get(key) is not None
    monkeypatch.setenv(KEY_ENV, str(new_key_file(tmp_path, "other.key")))  # another user, another key
    assert cache.get(key) is None


def test_listed_symlinks_are_refused_and_unlisted_files_never_opened(tmp_path):
    cache = StageCache(tmp_path)
    key = "12" * 32
    path = _entry(cache, key)
    os.mkfifo(path / "stray.csv")  # opening it for reading would block: the test would hang
    (path / "leak.csv").symlink_to("/etc/hostname")
    entry = cache.get(key)
    assert entry is not None and set(entry.files) == {"x.bin"}
    # a listed file replaced by a symlink to the same bytes is refused
    secret = tmp_path / "secret"
    secret.write_bytes(b"payload")
    (path / "x.bin").unlink()
    (path / "x.bin").symlink_to(secret)
    assert cache.get(key) is None
    assert secret.read_bytes() == b"payload"  # the link was removed, not what it points to


def test_cache_gc_unlinks_symlinks_and_never_follows_them(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    (precious / ("ab" * 32)).mkdir()  # looks like an entry: still not the cache's to delete
    cache = StageCache(tmp_path / "store")
    kept = _entry(cache, "34" * 32)
    gone = _entry(cache, "56" * 32)
    (cache.dir / "zz").symlink_to(precious)
    (cache.dir / "ab").mkdir()
    (cache.dir / "ab" / ("ab" * 32)).symlink_to(precious)
    report = cache.gc(keep={"34" * 32})
    assert sorted(report.removed) == sorted(["zz", f"ab/{'ab' * 32}", f"56/{'56' * 32}"])
    assert (precious / "thesis.tex").read_text() == "years of work" and (precious / ("ab" * 32)).is_dir()
    assert kept.is_dir() and not gone.exists() and not (cache.dir / "zz").exists()


def _version(root: Path, name: str, key: str) -> Path:
    _publish(str(root), name, key, b"x")
    return ArtifactStore(root).versions(name)[-1].path


def test_a_version_without_manifest_never_blocks_the_next_one(tmp_path):
    store = ArtifactStore(tmp_path)
    _version(tmp_path, "m", "k1")
    (tmp_path / "artifacts" / "m" / "v2").mkdir()
    (tmp_path / "artifacts" / "m" / "v2" / "model.pte").write_bytes(b"half")
    assert _publish(str(tmp_path), "m", "k2", b"y") == 3
    assert [f.problem for f in store.scan()] == ["half-present version: no manifest.json"]
    assert store.gc([]) == ["m/v2"] and store.scan() == []


def test_a_damaged_version_is_not_reused(tmp_path):
    v1 = _version(tmp_path, "m", "k1")
    (v1 / "model.pte").write_bytes(b"")
    assert _publish(str(tmp_path), "m", "k1", b"x") == 2  # same build key, but v1 is damaged


def test_paths_outside_the_store_are_not_artifacts(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    v1 = _version(tmp_path / "store", "m", "k1")
    project = tmp_path / "fw_project"
    shutil.copytree(v1, project)
    (project / "src").mkdir()
    for ref in (str(project), str(project / "src"), "/", str(tmp_path)):
        with pytest.raises(NotAnArtifact):
            store.resolve(ref)
    link = tmp_path / "store" / "artifacts" / "m" / "v9"
    link.symlink_to(project)
    with pytest.raises(NotAnArtifact):
        store.resolve(str(link))
    assert store.resolve(str(v1)).id == "m/v1" and store.resolve("m").id == "m/v1"
    assert [a.id for a in store.all()] == ["m/v1"]  # the symlinked version is not listed
    store.gc([])
    assert not os.path.lexists(link) and (project / "src").is_dir()


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
    assert [p.name for p in Path(cache.path(key)).parent.iterdir()] == []
