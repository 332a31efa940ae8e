"""Flows: the only layer that imports Prefect: the ``aca-run`` flow, its tasks and artifacts."""
