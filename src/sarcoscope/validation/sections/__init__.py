"""The sections of a validation report, one module per concern; each adds to a `ReportFolder`."""
