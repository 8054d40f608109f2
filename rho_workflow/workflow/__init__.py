"""workflow layer (see docs/contracts.md)."""
