"""models layer (see docs/contracts.md)."""
