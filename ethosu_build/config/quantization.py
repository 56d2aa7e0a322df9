"""The quantization section's checks (config/validate.py calls `check`): the schemes, the IO
dtype, the activation observers, each per-module override, and quantization-aware training.
"""

from __future__ import annotations

from .. import data
from ..errors import ConfigIssue
from .schema import DOTTED, QAT_ONLY_SCHEMES, BuildConfig, OverrideEntry, QatConfig, choice


def check(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    q = cfg.quantization
    choice(issues, "quantization.scheme", q.scheme)
    choice(issues, "quantization.io", q.io)
    choice(issues, "quantization.observer", q.observer)
    for name, entry in cfg.overrides.items():
        _check_override(f"overrides.{name}", entry, issues)
    _check_qat(cfg, issues)


def _check_override(key: str, entry: OverrideEntry, issues: list[ConfigIssue]) -> None:
    selectors = [s for s in OverrideEntry.SELECTORS if getattr(entry, s) not in (None, False)]
    if len(selectors) != 1:
        found = ", ".join(f"{s}={getattr(entry, s)!r}" for s in selectors) or "none"
        issues.append(
            ConfigIssue(
                key, f"needs exactly one selector, found {found}; accepted: one of module_name, module_type, io: true"
            )
        )
    choice(issues, f"{key}.scheme", entry.scheme, "overrides.*.scheme")
    if entry.observer is not None and choice(issues, f"{key}.observer", entry.observer, "overrides.*.observer"):
        if entry.scheme == "float":
            issues.append(
                ConfigIssue(
                    f"{key}.observer",
                    f"{entry.observer!r} with scheme float, which quantizes nothing; "
                    "accepted: null, or a quantized scheme",
                )  # fmt: skip
            )
    if entry.module_type is not None and not DOTTED.match(entry.module_type):
        issues.append(
            ConfigIssue(
                f"{key}.module_type",
                f"{entry.module_type!r} is not a dotted class path; accepted: e.g. torch.nn.Linear",
            )
        )
    if entry.io is not None and entry.scheme in ("a16w8", "a8w4"):
        issues.append(
            ConfigIssue(
                f"{key}.scheme",
                f"{entry.scheme!r} is not an IO scheme; accepted for io: int8, float (or quantization.io=uint8)",
            )
        )


def _check_qat(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    """A QAT-only scheme needs quantization.qat; an observer other than the default needs its
    absence (in training the fake quantizers track the ranges: no observer applies); the qat
    settings themselves."""
    q = cfg.quantization
    uses = [("quantization.scheme", q.scheme)] + [(f"overrides.{n}.scheme", e.scheme) for n, e in cfg.overrides.items()]
    if q.qat is None:
        for key, scheme in uses:
            if scheme in QAT_ONLY_SCHEMES:
                issues.append(
                    ConfigIssue(
                        key,
                        f"{scheme!r} needs quantization-aware training, and quantization.qat is null; accepted: set "
                        "quantization.qat (e.g. quantization=a8w4_qat), or a post-training scheme: int8, a16w8",
                    )
                )
        return
    observers = [("quantization.observer", q.observer)]
    observers += [(f"overrides.{n}.observer", e.observer) for n, e in cfg.overrides.items()]
    for key, observer in observers:
        if observer not in (None, "histogram"):
            issues.append(
                ConfigIssue(
                    key,
                    f"{observer!r} sets ranges in calibration, and quantization.qat is set; accepted: "
                    "histogram (the default, unused in training), or quantization.qat: null",
                )  # fmt: skip
            )
    qat: QatConfig = q.qat
    choice(issues, "quantization.qat.optimizer", qat.optimizer)
    choice(issues, "quantization.qat.loss", qat.loss)
    if qat.epochs < 1:
        issues += [ConfigIssue("quantization.qat.epochs", f"{qat.epochs} is not positive; accepted: an integer >= 1")]
    if not qat.lr > 0:
        issues.append(
            ConfigIssue("quantization.qat.lr", f"{qat.lr!r} is not positive; accepted: a learning rate > 0, e.g. 1e-4")
        )
    # qat.seed orders the training steps (a torch generator), it draws no samples: no seed here
    issues.extend(data.dataset_issues("quantization.qat", qat.dataset, qat.num_samples, qat.batch_size))
