"""What tests share, imported by test modules at any depth (no test module imports another): real
components (a synthetic service exporting metrics, ``flagroll run`` as a child process, a webhook
receiver, a fault-injecting proxy, a fake Kubernetes API, the JavaScript flagd evaluator), the
reconciler's in-process environment and a rollout driven through it, a model of how flagd evaluators
bucket users, the checkout's paths, and polling without blind sleeps."""
