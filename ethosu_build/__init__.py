"""ethosu-build: declarative, reproducible Ethos-U builds of PyTorch models."""

__version__ = "0.1.0"
