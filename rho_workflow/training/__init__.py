"""training layer (see docs/contracts.md)."""
