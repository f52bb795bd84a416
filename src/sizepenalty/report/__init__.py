"""Tables, statistics and figures built from the per-case metrics (no tracking)."""
