"""flagroll: a feature-flag rollout controller for OpenFeature/flagd, judged by Prometheus."""

__version__ = "0.1.0"
