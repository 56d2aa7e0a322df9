"""A model's outputs as one flat list, in the order torch.export flattens them (and so the
order of the exported, lowered and deployed program's outputs): a tuple's or list's order, a
dict's insertion order, nested structures depth first. Each output has a name: `output_<i>`
for a position, a dict's key or a named tuple's field.

torch is imported inside the function: the stage modules that use it are imported on the
up-to-date path.
"""

from __future__ import annotations

from typing import Any


def flat_outputs(out: Any) -> tuple[list[str], list[Any]]:
    """(names, tensors) of what a model's forward returned; one tensor gives ["output"]."""
    import torch
    from torch.utils._pytree import tree_flatten_with_path

    leaves, _ = tree_flatten_with_path(out)
    names, tensors = [], []
    for path, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):  # a constant: torch.export makes it no output
            continue
        names.append(_name(path))
        tensors.append(leaf)
    return names, tensors


def _name(path: tuple) -> str:
    parts = []
    for key in path:  # pytree's SequenceKey (idx), MappingKey (key), GetAttrKey (name)
        attr = next((a for a in ("idx", "key", "name") if hasattr(key, a)), None)
        parts.append(str(getattr(key, attr)) if attr else str(key))
    if not parts:
        return "output"
    name = ".".join(parts)
    return f"output_{name}" if hasattr(path[0], "idx") else name
