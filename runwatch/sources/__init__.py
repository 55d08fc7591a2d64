"""Sources: where events enter the pipeline."""
