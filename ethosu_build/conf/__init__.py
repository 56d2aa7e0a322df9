"""Built-in config groups (found by Hydra as pkg://ethosu_build.conf)."""
