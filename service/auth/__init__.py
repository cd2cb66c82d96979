"""API keys (hashed, roles, rotation) and rate limits per key and per source."""
