"""The benchmarks and the rollout simulator in bench/, on small runs."""
