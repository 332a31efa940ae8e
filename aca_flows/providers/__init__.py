"""Providers: one module per LLM vendor behind the interface in ``base``; knows nothing of tasks or Prefect."""
