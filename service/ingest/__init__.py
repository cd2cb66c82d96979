"""Comments in: platform adapters, sources (signing secrets, thresholds), receiving webhooks, reading comments."""
