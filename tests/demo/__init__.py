"""The demo's pure parts: what it prints from decision records, and the design of its scenarios."""
