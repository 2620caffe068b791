"""The adapters (controller.adapters): Prometheus, credentials, the flag stores, the decision log,
notifications, endpoints, Kubernetes."""
