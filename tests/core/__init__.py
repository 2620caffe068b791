"""The pure core (controller.core): decisions, policies and their rules, statistics, durations, the
flag layout."""
