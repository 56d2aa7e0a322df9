"""The config layer: the typed schema of every group, the static checks (no torch), the
target facts needed before any import, and the one error vocabulary."""
