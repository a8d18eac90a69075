"""Array operations shared by stages (no I/O, no models)."""
