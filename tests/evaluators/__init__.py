"""The flag file as real flagd evaluators serve it: the Python in-process evaluator and the JavaScript
evaluator, how each buckets users, and how far they disagree (docs/evaluators.md)."""
