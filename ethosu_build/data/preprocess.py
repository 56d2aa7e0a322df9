"""`model.preprocess`: the steps that turn a raw frame (an image file, a camera buffer) into
the model's float input, declared once in the recipe (docs/data-and-models.md).

The `images` data source applies them to every image it reads; the manifest and report.md
record them; `ethosu-artifacts export --firmware` writes them into `model_io.h` as the
constants a device applies to a raw frame before the input's boundary quantization.

A step is a mapping with an `op` and its parameters. Two phases, in this order:
- pixels (Pillow, on the decoded image): `color`, `resize`, `center_crop`;
- numbers (float64, rounded once to float32 at the end): `scale`, `normalize`, `layout`.
Without a `layout` step the input is channels-first (C, H, W), as PyTorch models take it.

Pillow and numpy are imported inside functions: `issues()` runs during validation, before
any heavy import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigIssue

# op -> (phase, {parameter: (required, description of what is accepted)})
STEPS: dict[str, tuple[str, dict[str, tuple[bool, str]]]] = {
    "color": ("pixels", {"mode": (True, "gray, rgb or bgr")}),
    "resize": (
        "pixels",
        {
            "size": (True, "a positive integer (the shorter side; the aspect ratio is kept) or [height, width]"),
            "interpolation": (False, "nearest, bilinear (default), bicubic, box or lanczos"),
        },
    ),
    "center_crop": ("pixels", {"size": (True, "a positive integer (a square) or [height, width]")}),
    "scale": ("numbers", {"divisor": (False, "a positive number (default 255): x / divisor")}),
    "normalize": (
        "numbers",
        {
            "mean": (True, "a number or one per channel: (x - mean) / std"),
            "std": (True, "a non-zero number or one per channel"),
        },
    ),
    "layout": ("numbers", {"order": (True, "chw (channels first, the default) or hwc (channels last)")}),
}
COLOR_CHANNELS = {"gray": 1, "rgb": 3, "bgr": 3}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "lanczos")
LAYOUTS = ("chw", "hwc")


# --- validation (no heavy imports) -----------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _size(v: Any) -> tuple[int, int] | int | None:
    """A valid size: a positive int, or [h, w] of positive ints; else None."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    if (
        isinstance(v, (list, tuple))
        and len(v) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)
    ):
        return int(v[0]), int(v[1])
    return None


def _per_channel(v: Any) -> list[float] | None:
    if _number(v):
        return [float(v)]
    if isinstance(v, (list, tuple)) and v and all(_number(x) for x in v):
        return [float(x) for x in v]
    return None


def issues(steps: Any, key: str = "model.preprocess", input_shape: Sequence[int] | None = None) -> list[ConfigIssue]:
    """Every problem of `steps`, each naming `key.N.param`, the value and what is accepted.
    With `input_shape` (the model's first input, batch 1), the channels the steps produce
    and the size a fixed resize or crop gives are checked against it too."""
    if steps is None:
        return []
    if not isinstance(steps, (list, tuple)):
        return [ConfigIssue(key, f"{steps!r} is not a list of steps; accepted: [{{op: resize, size: 32}}, ...]")]
    found: list[ConfigIssue] = []
    seen_numbers = None  # the first numbers-phase step: no pixel step may follow it
    ops = []
    for i, step in enumerate(steps):
        where = f"{key}.{i}"
        if not isinstance(step, dict) or "op" not in step:
            found.append(ConfigIssue(where, f"{step!r} is not a step; accepted: a mapping with op: {', '.join(STEPS)}"))
            continue
        op = step["op"]
        if op not in STEPS:
            found.append(ConfigIssue(f"{where}.op", f"{op!r} is not a step; accepted: {', '.join(STEPS)}"))
            continue
        ops.append(op)
        phase, params = STEPS[op]
        for name in step:
            if name != "op" and name not in params:
                found.append(
                    ConfigIssue(f"{where}.{name}", f"is not a parameter of {op}; accepted: {', '.join(params)}")
                )
        for name, (required, accepted) in params.items():
            if required and name not in step:
                found.append(ConfigIssue(f"{where}.{name}", f"missing; accepted: {accepted}"))
            elif name in step and not _valid(op, name, step[name]):
                found.append(ConfigIssue(f"{where}.{name}", f"{step[name]!r} is not accepted; accepted: {accepted}"))
        if phase == "numbers" and seen_numbers is None:
            seen_numbers = i
        if phase == "pixels" and seen_numbers is not None:
            found.append(
                ConfigIssue(
                    f"{where}.op",
                    f"{op} comes after {steps[seen_numbers]['op']} (step {seen_numbers}); accepted: the pixel steps "
                    "(color, resize, center_crop) first, then scale, normalize, layout",
                )
            )
    for op in ("color", "scale", "normalize", "layout"):
        if ops.count(op) > 1:
            found.append(ConfigIssue(key, f"has {ops.count(op)} {op} steps; accepted: at most one"))
    normalize = next((s for s in steps if isinstance(s, dict) and s.get("op") == "normalize"), None)
    if normalize and not found:
        mean, std = _per_channel(normalize["mean"]), _per_channel(normalize["std"])
        if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
            found.append(
                ConfigIssue(f"{key}.{steps.index(normalize)}", f"mean has {len(mean)} values and std {len(std)}")
            )
    if not found and input_shape is not None:
        found.extend(_against_input(steps, key, list(input_shape)))
    return found


def _valid(op: str, name: str, v: Any) -> bool:
    if name == "size":
        return _size(v) is not None
    if name == "mode":
        return v in COLOR_CHANNELS
    if name == "interpolation":
        return v in INTERPOLATIONS
    if name == "divisor":
        return _number(v) and v > 0
    if name == "mean":
        return _per_channel(v) is not None
    if name == "std":
        values = _per_channel(v)
        return values is not None and all(x != 0 for x in values)
    if name == "order":
        return v in LAYOUTS
    return False


def layout(steps: Sequence[dict[str, Any]]) -> str:
    return next((s["order"] for s in steps if s.get("op") == "layout"), "chw")


def channels(steps: Sequence[dict[str, Any]]) -> int | None:
    """The channels the steps produce, where a color step or a per-channel normalize fixes them."""
    color = next((s["mode"] for s in steps if s.get("op") == "color"), None)
    if color:
        return COLOR_CHANNELS[color]
    normalize = next((s for s in steps if s.get("op") == "normalize"), None)
    if normalize:
        n = max(len(_per_channel(normalize["mean"])), len(_per_channel(normalize["std"])))
        return n if n > 1 else None
    return None


def image_channels(steps: Sequence[dict[str, Any]], mode: str) -> int:
    """The channels `apply` makes from an image of this Pillow mode."""
    color = next((s["mode"] for s in steps if s.get("op") == "color"), None)
    if color:
        return COLOR_CHANNELS[color]
    return 1 if mode in ("L", "I;16", "I", "F") else 3


def _against_input(steps: Sequence[dict[str, Any]], key: str, shape: list[int]) -> list[ConfigIssue]:
    if len(shape) != 4:
        return [ConfigIssue(key, f"images make 3-D inputs (C, H, W) and the model's first input is {shape}")]
    order = layout(steps)
    c, h, w = (shape[1], shape[2], shape[3]) if order == "chw" else (shape[3], shape[1], shape[2])
    found = []
    made = channels(steps)
    if made is not None and made != c:
        found.append(
            ConfigIssue(key, f"the steps make {made}-channel images, and the model's input {shape} has {c} ({order})")
        )
    normalize = next((s for s in steps if s.get("op") == "normalize"), None)
    if normalize:
        for name in ("mean", "std"):
            n = len(_per_channel(normalize[name]))
            if n not in (1, c):
                found.append(
                    ConfigIssue(f"{key}.{steps.index(normalize)}.{name}", f"has {n} values; accepted: 1 or {c}")
                )
    fixed = fixed_size(steps)
    if fixed is not None and fixed != (h, w):
        found.append(
            ConfigIssue(key, f"the steps make {fixed[0]}x{fixed[1]} images, and the model's input {shape} is {h}x{w}")
        )
    return found


def fixed_size(steps: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
    """(height, width) the last crop or two-sided resize fixes, whatever the image's size."""
    size = None
    for s in steps:
        if s.get("op") in ("resize", "center_crop"):
            v = _size(s["size"])
            if s["op"] == "center_crop":
                size = (v, v) if isinstance(v, int) else v
            else:
                size = v if isinstance(v, tuple) else None
    return size


def output_size(steps: Sequence[dict[str, Any]], height: int, width: int) -> tuple[int, int]:
    """(height, width) an image of this size has after the pixel steps."""
    for s in steps:
        if s.get("op") == "resize":
            height, width = _resized(_size(s["size"]), height, width)
        elif s.get("op") == "center_crop":
            v = _size(s["size"])
            height, width = (v, v) if isinstance(v, int) else v
    return height, width


def _resized(size: int | tuple[int, int], height: int, width: int) -> tuple[int, int]:
    if isinstance(size, tuple):
        return size
    # the shorter side becomes `size`, as torchvision's Resize(int) does
    if height <= width:
        return size, max(1, int(size * width / height))
    return max(1, int(size * height / width)), size


def crop_too_large(steps: Sequence[dict[str, Any]], height: int, width: int) -> str | None:
    """Why a center crop cannot be taken from an image of this size, or None."""
    for s in steps:
        if s.get("op") == "resize":
            height, width = _resized(_size(s["size"]), height, width)
        elif s.get("op") == "center_crop":
            v = _size(s["size"])
            ch, cw = (v, v) if isinstance(v, int) else v
            if ch > height or cw > width:
                return f"center_crop {ch}x{cw} is larger than the image ({height}x{width} at that step)"
            height, width = ch, cw
    return None


# --- applying ---------------------------------------------------------------------------------


def apply(image, steps: Sequence[dict[str, Any]]):
    """A decoded PIL image -> the model's float32 input (C, H, W), or (H, W, C) after a
    `layout: hwc` step. Without a color step, a gray image stays one channel, 16-bit and float
    images keep their values, and any other mode (palette, RGBA, CMYK) becomes RGB."""
    import numpy as np
    from PIL import Image

    color = next((s["mode"] for s in steps if s["op"] == "color"), None)
    if color == "gray":
        image = image.convert("L")
    elif color in ("rgb", "bgr") or image.mode not in ("L", "RGB", "I;16", "I", "F"):
        image = image.convert("RGB")
    filters = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "box": Image.Resampling.BOX,
        "lanczos": Image.Resampling.LANCZOS,
    }
    for s in steps:
        if s["op"] == "resize":
            h, w = _resized(_size(s["size"]), image.height, image.width)
            image = image.resize((w, h), filters[s.get("interpolation", "bilinear")])
        elif s["op"] == "center_crop":
            v = _size(s["size"])
            h, w = (v, v) if isinstance(v, int) else v
            top, left = (image.height - h) // 2, (image.width - w) // 2
            image = image.crop((left, top, left + w, top + h))
    x = np.asarray(image, dtype=np.float64)
    x = x[:, :, None] if x.ndim == 2 else x
    if color == "bgr":
        x = x[:, :, ::-1]
    for s in steps:
        if s["op"] == "scale":
            x = x / float(s.get("divisor", 255))
        elif s["op"] == "normalize":
            x = (x - np.asarray(_per_channel(s["mean"]))) / np.asarray(_per_channel(s["std"]))
    if layout(steps) == "chw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


# --- describing: the report and the firmware --------------------------------------------------


def describe(step: dict[str, Any]) -> str:
    op = step["op"]
    if op == "color":
        return f"color: convert to {step['mode']}"
    if op == "resize":
        v = _size(step["size"])
        what = f"the shorter side to {v} (aspect kept)" if isinstance(v, int) else f"to {v[0]}x{v[1]} (HxW)"
        return f"resize {what}, {step.get('interpolation', 'bilinear')}"
    if op == "center_crop":
        v = _size(step["size"])
        h, w = (v, v) if isinstance(v, int) else v
        return f"center_crop to {h}x{w} (HxW)"
    if op == "scale":
        return f"scale: x / {_fmt(step.get('divisor', 255))}"
    if op == "normalize":
        return f"normalize: (x - {_fmt(step['mean'])}) / {_fmt(step['std'])} per channel"
    return f"layout: {step['order']}"


def _fmt(v: Any) -> str:
    return "[" + ", ".join(f"{x:g}" for x in v) + "]" if isinstance(v, (list, tuple)) else f"{v:g}"


def affine(steps: Sequence[dict[str, Any]], channels: int) -> tuple[list[float], list[float]]:
    """Per channel (a, b) with float input = a * raw + b: what scale and normalize compute."""
    a, b = [1.0] * channels, [0.0] * channels
    for s in steps:
        if s["op"] == "scale":
            d = float(s.get("divisor", 255))
            a, b = [x / d for x in a], [x / d for x in b]
        elif s["op"] == "normalize":
            mean, std = _per_channel(s["mean"]), _per_channel(s["std"])
            mean, std = mean * channels if len(mean) == 1 else mean, std * channels if len(std) == 1 else std
            a = [x / sd for x, sd in zip(a, std)]
            b = [(x - m) / sd for x, m, sd in zip(b, mean, std)]
    return a, b
