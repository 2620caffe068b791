"""Adapters: the I/O at the edges, kept thin.

Prometheus (client, authentication, a local server for the demo and tests), the flag stores (file,
overlay, Kubernetes), policy files on disk, the decision log, notifications, metrics and health
endpoints, and log set-up. Adapters may import the core, never the loop or a command. See
docs/architecture.md.
"""
