"""Kubernetes adapters: flag stores kept in a ConfigMap or an OpenFeature ``FeatureFlag``, and a Lease
leader elector. Thin I/O over the lightkube client; the rollout logic stays in the pure core.

Nothing in the functional core imports this package (an import-linter contract says so), and the
command line imports it only when a Kubernetes store or a leader Lease is asked for.
"""
