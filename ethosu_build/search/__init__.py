"""`ethosu-search`: hardware-aware mixed precision (docs/search.md)."""
