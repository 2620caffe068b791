"""``flagroll demo``: a real Prometheus, a demo service, and the controller, in one command."""
