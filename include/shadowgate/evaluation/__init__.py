"""Model evaluation: metrics, paired statistics and drift."""
