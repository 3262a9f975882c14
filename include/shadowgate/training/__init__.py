"""Training: labels from matured outcomes, temporal split, model families, MLflow logging."""
