"""The stages of a build, in pipeline order: the one list a new stage joins (its module
declares the rest: stage.py). keys.py derives the keys from it, build.py the manifest and
the artifact's files, report.py the sections of report.md."""

from __future__ import annotations

from .evaluate import Evaluate
from .export import Export
from .lower import Lower
from .quantize import Quantize
from .stage import Stage
from .vela import Vela

STAGES: tuple[type[Stage], ...] = (Export, Quantize, Lower, Vela, Evaluate)
