"""data layer (see docs/contracts.md)."""
