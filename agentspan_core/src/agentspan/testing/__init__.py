"""Testing helpers for Agentspan backends (``agentspan.testing.conformance`` needs pytest)."""
