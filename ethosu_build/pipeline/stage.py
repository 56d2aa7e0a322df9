"""The shape every stage shares, and the one place that runs a stage.

A stage (export.py, quantize.py, lower.py, vela.py, evaluate.py; listed once in stages.py)
is a class that declares, in its own module, everything about it:
- `name`: its key in StageKeys and its name in logs and the manifest;
- `version`: bumped when its code changes what it produces (a new key, a new cache entry);
- `key_inputs(cfg, keys)`: what its key is made of besides its name and version: the config
  fields that change its output and the keys of the stages it consumes (keys.py hashes it);
- `inputs(run)`: the results of the stages it consumes (its predecessors);
- `compute(run, *inputs)`: its typed result;
- `result`: the result's class, with `save(folder)` to write a cache entry and
  `load(entry)` to read one back (store/cache.py verified the entry before);
- `manifest(run)`: its sections of the artifact's manifest; `files(run)`: the files it puts
  in the artifact; `report(m, vela_dir)`: its sections of report.md (build.py and report.py
  loop over the stages);
- `write_behind`: its entry is stored by a forked child while the build goes on
  (background.py), for results that take long to serialize (exported programs).

`Run.get(Stage)` is the only code that decides "cached, or compute under the key's lock,
then store": a verified entry is loaded (one that fails to load is discarded and the stage
computed again); otherwise the model checks run first (so a config error takes no lock and
writes nothing), then, under the key's lock, the inputs are fetched, the stage computed
and timed, and its result stored. Locks are taken down the pipeline only (lower ->
quantize -> export), so nested claims cannot deadlock. A write-behind child takes the key's
lock over (store/cache.py KeyLock) and releases it when the entry is stored, whatever this
process waits for then. A Run is a context manager: leaving it waits for its children.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from .. import background, data, numerics
from ..config.schema import BuildConfig
from ..errors import BuildError, EthosuError, first_line
from ..store.cache import Entry, KeyLock, StageCache
from .model_checks import check_model, load_model

if TYPE_CHECKING:
    from pathlib import Path

# Set by the CLI's SIGINT handler (app.py): a Ctrl-C that library code swallowed (seen under
# load inside the quantize stage) still stops the build at the next stage boundary, before
# anything is cached or stored.
interrupted = threading.Event()


def stop_if_interrupted() -> None:
    if interrupted.is_set():
        raise KeyboardInterrupt


log = logging.getLogger("ethosu_build.build")
R = TypeVar("R", bound="Result")


class Result(Protocol):
    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, entry: Entry) -> Result: ...


class Stage(Generic[R]):
    name: ClassVar[str]
    version: ClassVar[int]
    result: ClassVar[type]
    needs_model: ClassVar[bool] = True  # computing it needs the float model (and its checks)
    write_behind: ClassVar[bool] = False  # store its entry from a forked child (background.py)

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        """What the key is made of besides the stage's name and version; `keys` holds the keys
        of the stages before it. Paths, logging and launcher settings never enter a key;
        inputs enter by content. Torch-free: keys are computed before anything is imported."""
        raise NotImplementedError

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        return ()

    @classmethod
    def compute(cls, run: Run, *inputs: Any) -> R:
        raise NotImplementedError

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        """Its sections of the manifest, from results the build has fetched (build.py)."""
        return {}

    @classmethod
    def files(cls, run: Run) -> dict[str, bytes]:
        """The files it puts in the artifact, by path inside the artifact's folder."""
        return {}

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        """Its sections of report.md (Markdown lines), from a manifest: stored artifacts of
        older versions lack newer keys, so read them with .get()."""
        return []


@dataclass(frozen=True)
class StageKeys:
    """The key of every stage of a build, by stage name, and `build`: the artifact's identity
    (same key, same version). Read as attributes (keys.quantize) or as_dict()."""

    by_stage: dict[str, str]

    def __getattr__(self, name: str) -> str:  # only for names that are not fields
        try:
            return self.__dict__["by_stage"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, str]:
        return dict(self.by_stage)


def dataset_key(ds, batch_size: bool) -> dict[str, Any]:
    """The samples a stage sees, for its key (and, for calibration, how they are batched:
    observers merge per call). evaluation.batch_size is speed only: not in a key."""
    key = {"data": data.fingerprint(ds.dataset), "num_samples": ds.num_samples, "seed": ds.seed}
    return {**key, "batch_size": ds.batch_size} if batch_size else key


class Run:
    """The stages of one build (or of one measurement of the search), sharing the float
    model, the data and every stage result it has fetched."""

    def __init__(self, cfg: BuildConfig, keys: StageKeys, model=None):
        self.cfg, self.keys = cfg, keys
        self.cache = StageCache(cfg.store.root)
        self.record: dict[str, dict[str, Any]] = {}  # per stage: key, ran or cached, seconds
        self._results: dict[str, Any] = {}
        self._model = model
        self._samples: dict[str, Any] = {}
        # Seen by the lowering when it runs in this build: the TOSA check (evaluate.py) needs
        # the partitioned program, which exists only while lowering.
        self.inspect_lowering: Callable[[Any, dict[str, bytes]], None] | None = None
        self.children: list[background.Child] = []  # work handed to forked children (background.py)
        self._stores: list[background.Child] = []
        thread_lock_for_tqdm()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, *_) -> None:
        """Wait for the children: the entries being stored, and any work whose result was not
        taken. A failed store fails a build that succeeded, as a store in place would have."""
        stores, self._stores = self._stores, []
        failure: background.ChildFailed | None = None
        for child in stores:
            try:
                child.result()
            except background.ChildFailed as exc:
                failure = failure or exc
        for child in self.children:
            child.reap()
        if failure is not None and exc_type is None:
            failure.reraise()

    # --- shared inputs ---------------------------------------------------------------------

    def model(self):
        """The float model, loaded and checked against the config once."""
        if self._model is None:
            model = load_model(self.cfg)
            check_model(self.cfg, model)
            self._model = model
        return self._model

    def samples(self, which: str):
        """The samples of `calibration`, `evaluation` or `quantization.qat` (data.take)."""
        if which not in self._samples:
            ds_cfg = {
                "calibration": self.cfg.calibration,
                "evaluation": self.cfg.evaluation,
                "quantization.qat": self.cfg.quantization.qat,
            }[which]
            dataset = data.instantiate(ds_cfg.dataset)
            n = ds_cfg.num_samples or len(dataset)  # qat: null is the whole dataset
            seed = None if which == "quantization.qat" else ds_cfg.seed  # QAT's seed orders its training steps
            self._samples[which] = data.take(dataset, n, self.cfg.model.input_specs(), f"{which}.dataset", seed)
        return self._samples[which]

    # --- the one helper ----------------------------------------------------------------------

    def get(self, stage: type[Stage[R]]) -> R:
        if stage.name not in self._results:
            self._results[stage.name] = self._get(stage)
        return self._results[stage.name]

    def fetched(self, name: str) -> Any:
        """The result of a stage this run has fetched, by name: for a stage's manifest
        sections that read another stage's result without importing it (build.py fetches
        every stage whose result the manifest reads)."""
        if name not in self._results:
            raise RuntimeError(f"the {name} stage's result was not fetched before the manifest was made")
        return self._results[name]

    def will_run(self, stage: type[Stage]) -> bool:
        """Whether `stage` is neither fetched nor in the cache: a hint for scheduling work
        beside it, never for a result (a damaged entry runs the stage anyway)."""
        return stage.name not in self._results and not self.cache.path(self.keys.as_dict()[stage.name]).exists()

    def _get(self, stage: type[Stage[R]]) -> R:
        key = self.keys.as_dict()[stage.name]
        result = self._cached(stage, key)
        if result is not None:
            return result
        if stage.needs_model:
            self.model()
        with self.cache.claim(key, stage.name) as lock:
            result = self._cached(stage, key)  # another process may have computed it while we waited
            if result is not None:
                return result
            inputs = stage.inputs(self)
            stop_if_interrupted()
            result = self._timed(stage.name, lambda: stage.compute(self, *inputs))
            stop_if_interrupted()

            def store() -> None:
                with self.cache.put(key, stage.name) as folder:
                    result.save(folder)

            if stage.write_behind and background.possible():
                # The child takes this key's lock over; the build's other locks stay here.
                what = f"storing the {stage.name} stage's cache entry"
                self._stores.append(background.Child(what, store, close_fds=KeyLock.held - {lock.fd}))
                lock.hand_over()
            else:
                store()
        return result

    def _cached(self, stage: type[Stage[R]], key: str) -> R | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        try:
            result = stage.result.load(entry)
        except Exception as exc:  # e.g. a program that no longer deserializes
            self.cache.discard(key, f"it does not load: {type(exc).__name__}: {first_line(exc)}")
            return None
        self.record[stage.name] = {"key": key, "status": "cached", "seconds": 0.0}
        log.info("%s: cached (key %s)", stage.name, key[:12])
        return result

    def _timed(self, name: str, fn: Callable[[], R]) -> R:
        log.info("%s: running", name)
        t0 = time.perf_counter()
        try:
            with numerics.numeric_stage():
                out = fn()
        except EthosuError:
            raise
        except SystemExit as exc:
            raise BuildError(f"{name} stage: stopped by sys.exit({exc.code!r}) in {origin(exc)}") from exc
        except Exception as exc:  # a crash inside torch/executorch: name the stage, keep the trace in the log
            log.debug("%s failed", name, exc_info=True)
            raise BuildError(
                f"{name} stage failed: {type(exc).__name__}: {first_line(exc)} (traceback in the run's build.log)"
            ) from exc
        seconds = round(time.perf_counter() - t0, 3)
        self.record[name] = {"key": self.keys.as_dict()[name], "status": "ran", "seconds": seconds}
        log.info("%s: done in %.1f s", name, seconds)
        return out


def origin(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame of its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else "unknown code"


def thread_lock_for_tqdm() -> None:
    """Call before any stage runs. torch.fx's Interpreter opens a (disabled) tqdm bar during
    constant folding (torchao's and ExecuTorch's), and tqdm's first bar creates a
    multiprocessing lock: a named semaphore, which a sweep worker stopped at the end of a
    sweep (sweep/summary.py) never releases and the resource tracker then reports as leaked. Bars
    are never shared between processes here, so a thread lock serves."""
    try:
        import tqdm  # not torch: tqdm is small; absent, nothing creates that lock either
    except ImportError:
        return
    if "_lock" not in vars(tqdm.tqdm):
        tqdm.tqdm.set_lock(threading.RLock())
    # Nor a monitor thread (it watches bars that are never shown): with no thread but the
    # main one, work can be handed to a forked child (background.py).
    tqdm.tqdm.monitor_interval = 0
