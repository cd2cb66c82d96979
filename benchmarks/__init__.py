"""Load and throughput benchmarks (run as modules: `python -m benchmarks.ingest`)."""
