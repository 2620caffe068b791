"""What tests share, imported by test modules at any depth (no test module imports another): real
components (a synthetic service exporting metrics, ``flagroll run`` as a child process, a webhook
receiver, a fault-injecting proxy, a fake Kubernetes API), the reconciler's in-process environment,
the checkout's paths, and polling without blind sleeps."""
