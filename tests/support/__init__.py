"""Real components for tests: a Prometheus server, a synthetic service exporting metrics."""
