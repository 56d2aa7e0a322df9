"""Who the store trusts: the holders of one secret key, kept outside the store.

Anyone who can write a store's folder can put files in it, so nothing read back from it
is taken on its word: every cache entry and every artifact manifest carries an HMAC-SHA256
of its content under a key that lives outside the store (`key_file()`), and a reader
trusts what its own key signed, nothing else. A cached program is a graph that a later
build runs (and `torch.export.load` unpickles), so an entry that does not verify is never
opened: it is discarded and rebuilt. See docs, "Trust model".

The key is 32 random bytes in `$ETHOSU_BUILD_KEY_FILE` (which must exist), else
`$XDG_CONFIG_HOME/ethosu-build/store.key` (`~/.config/...`), created on first use with
mode 0600 in a folder of mode 0700. It is checked as ssh checks a private key: a regular
file, owned by the user, no access for group or others, and never inside the store it
signs. Users who share a store each hold a copy of one key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import IO_ERRNOS, ConfigError, ConfigIssue, io_failure
from ..fingerprint import canonical_json

KEY_ENV = "ETHOSU_BUILD_KEY_FILE"
KEY_BYTES = 32
Verdict = Literal["ok", "other_key", "bad", "missing"]
TRUST_WORDS: dict[str, str] = {  # a Verdict in the words every command prints
    "ok": "signed by your key",
    "other_key": "signed by another key (not verifiable with yours)",
    "missing": "unsigned",
    "bad": "changed since it was signed",
}


def key_file() -> Path:
    explicit = os.environ.get(KEY_ENV)
    if explicit is not None and not explicit.strip():  # set, but to nothing: a slip, never the default key
        raise ConfigError(
            ConfigIssue(
                KEY_ENV, f"is set but empty; accepted: the path of your key file, or unset it to use {_default()}"
            )
        )
    return Path(explicit).expanduser() if explicit else _default()


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


def signed_payload(meta: dict[str, Any]) -> bytes:
    """What a signature covers: the whole manifest or entry.json but the signature itself.
    A manifest holds its name and version and an entry its key, so a signature also binds
    the place it was written for (checked by the readers against where it sits)."""
    return canonical_json({k: v for k, v in meta.items() if k != "signature"}).encode()


@functools.lru_cache(maxsize=8)
def _load(path: str, explicit: bool, root: str | None, seen: tuple | None) -> StoreKey:
    """`seen` (the file's identity, mode and owner) is part of the cache key: a long-lived
    process (the warm service's builds) checks a key file again once it changed."""
    p = Path(path)
    if not os.path.lexists(p):
        if explicit:  # a mistyped path must never become a new key, and every signature void
            raise _key_error(
                p,
                f"does not exist (named by {KEY_ENV}); make one (head -c 32 /dev/urandom > FILE; chmod 600 FILE) or "
                f"unset it to use {_default()}",
            )
        _create(p)
    _refuse_unsafe(p, os.stat(p), root)  # a symlink (dotfile managers, secret mounts): its target, as ssh
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat above must not hang the command.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _key_error(p, f"cannot be read ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        _refuse_unsafe(p, os.fstat(f.fileno()), root)
        secret = f.read(4096)
    if len(secret) < KEY_BYTES:
        raise _key_error(p, f"holds {len(secret)} bytes; a key is {KEY_BYTES} or more random bytes")
    return StoreKey(secret)


def _refuse_unsafe(p: Path, st: os.stat_result, root: str | None) -> None:
    """The checks ssh makes of a private key, and one of our own: never inside the store."""
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise _key_error(p, f"is {kind}, not a regular file")
    if st.st_uid != os.geteuid():
        # Its owner could change it (chmod, rewrite) whatever its mode says now.
        raise _key_error(p, f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        # Whoever can read the key can sign what this user then trusts (and run it in verify).
        raise _key_error(p, f"is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    if root is not None:
        real_root, real_key = os.path.realpath(root), os.path.realpath(p)  # where a link leads counts
        if os.path.commonpath([real_root, real_key]) == real_root:
            # gc would delete it (every signature then void), and whoever writes the store
            # could replace it.
            raise _key_error(p, f"lies inside the store {root!r}; move it outside store.root")


def _default() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "ethosu-build" / "store.key"


def _create(path: Path) -> None:
    """Write a new key atomically: a process racing this one reads the same key."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _create_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        else:  # never silently: it is what every signature of this user will rest on
            print(f"ethosu-build: created a new store key {path} (mode 0600; docs/trust.md)", file=sys.stderr)
    except OSError as exc:
        raise _create_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _create_error(path: Path, exc: OSError) -> Exception:
    """A full disk or failing device is a failed command (exit 1); a folder that cannot be
    made or written is the user's to fix (exit 2)."""
    if exc.errno in IO_ERRNOS:
        return io_failure(exc)
    return _key_error(path, f"cannot be created ({exc.strerror})")


def _key_error(path: Path, what: str) -> ConfigError:
    return ConfigError(
        ConfigIssue(
            KEY_ENV,
            f"the store key {str(path)!r} {what}; a key is a regular file of {KEY_BYTES}+ random bytes, owned "
            "by you, mode 0600, outside the store (docs/trust.md)",
        )
    )


def store_key(root: Path | str | None = None) -> StoreKey:
    """This user's key, checked as ssh checks a private key; `root` is the store it is used
    for (the key may not lie inside it)."""
    path = key_file()
    try:
        st = os.lstat(path)
        seen: tuple | None = (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_mtime_ns)
    except OSError:
        seen = None
    return _load(str(path), bool(os.environ.get(KEY_ENV)), None if root is None else str(root), seen)
