"""Pre-training of the project's small synthetic "foundation" models (issue 4)."""
