"""The loop (controller.reconciler) in-process: cycles, deleted policies, shared templates, shadow
guardrails, hostile input."""
