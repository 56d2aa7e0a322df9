"""Who the store trusts: the holders of one secret key, kept outside the store.

Anyone who can write a store's folder can put files in it, so nothing read back from it
is taken on its word: every cache entry and every artifact manifest carries an HMAC-SHA256
of its content under a key that lives outside the store (`key_file()`), and a reader
trusts what its own key signed, nothing else. A cached program is a graph that a later
build runs (and `torch.export.load` unpickles), so an entry that does not verify is never
opened: it is discarded and rebuilt. See docs, "Trust model".

The key is 32 random bytes in `$ETHOSU_BUILD_KEY_FILE`, else
`$XDG_CONFIG_HOME/ethosu-build/store.key` (`~/.config/...`), created on first use with
mode 0600 in a folder of mode 0700. Users who share a store share trust by pointing
ETHOSU_BUILD_KEY_FILE at one key file that only they can read.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config.errors import ConfigError, ConfigIssue

KEY_ENV = "ETHOSU_BUILD_KEY_FILE"
KEY_BYTES = 32
Verdict = Literal["ok", "other_key", "bad", "missing"]


def key_file() -> Path:
    explicit = os.environ.get(KEY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "ethosu-build" / "store.key"


@dataclass(frozen=True)
class StoreKey:
    secret: bytes

    @property
    def id(self) -> str:
        """Names the key in what it signed (a hash of it: it reveals nothing of the key)."""
        return hashlib.sha256(b"ethosu-build key id\0" + self.secret).hexdigest()[:16]

    def sign(self, payload: bytes) -> dict[str, str]:
        return {"key_id": self.id, "hmac": hmac.new(self.secret, payload, hashlib.sha256).hexdigest()}

    def verify(self, payload: bytes, signature: Any) -> Verdict:
        """ok: signed by this key; other_key: signed by a key this reader does not hold;
        bad: claims this key but does not match (changed after signing); missing."""
        if not isinstance(signature, dict) or not isinstance(signature.get("hmac"), str):
            return "missing"
        if signature.get("key_id") != self.id:
            return "other_key"
        expected = hmac.new(self.secret, payload, hashlib.sha256).hexdigest()
        return "ok" if hmac.compare_digest(expected, signature["hmac"]) else "bad"


@functools.lru_cache(maxsize=4)
def _load(path: str) -> StoreKey:
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        _create(p)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _key_error(p, f"cannot be read ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _key_error(p, "is not a regular file")
        # A key that others may rewrite would let them sign what this user then trusts.
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _key_error(p, f"is writable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod go-w it")
        secret = f.read(4096)
    if len(secret) < KEY_BYTES:
        raise _key_error(p, f"holds {len(secret)} bytes; a key is {KEY_BYTES} or more random bytes")
    return StoreKey(secret)


def _create(path: Path) -> None:
    """Write a new key atomically: a process racing this one reads the same key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
    except OSError as exc:
        raise _key_error(path, f"cannot be created ({exc.strerror})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _key_error(path: Path, what: str) -> ConfigError:
    return ConfigError(
        ConfigIssue(
            KEY_ENV,
            f"the store key {str(path)!r} {what}; accepted: a file of {KEY_BYTES}+ random bytes "
            "that only you (or the users you share a store with) can write",
        )
    )


def store_key() -> StoreKey:
    return _load(str(key_file()))
