"""diffusion layer (see docs/contracts.md)."""
