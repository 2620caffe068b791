"""Whole processes: ``flagroll run`` and ``flagroll demo`` as child processes, crashes and injected faults."""
