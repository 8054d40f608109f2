"""evaluate layer (see docs/contracts.md)."""
