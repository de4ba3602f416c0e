"""Cohort runs: many CTs, resumable, locally or on a Dask cluster."""

from sarcoscope.batch.cases import Case, dicomweb_cases, discover_cases, read_manifest
from sarcoscope.batch.runner import BatchSummary, CaseOutcome, run_batch

__all__ = [
    "BatchSummary",
    "Case",
    "CaseOutcome",
    "dicomweb_cases",
    "discover_cases",
    "read_manifest",
    "run_batch",
]
