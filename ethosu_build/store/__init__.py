"""The store layer: versioned artifacts, the stage cache, provenance of recipes, and the key
that decides what the store trusts (docs/trust.md). Nothing here imports torch."""
