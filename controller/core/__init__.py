"""The functional core: pure decisions, no I/O.

Everything here is a function of its arguments (time is passed in as ``now``): the policy format and
its rules, the flag layout, queries and checks, the statistics, the decision itself, which policy
guards which flag, and the records and explanations on-call reads. It imports no adapter, no
command, and no I/O library (import-linter checks this). See docs/architecture.md.
"""
