"""Accuracy evaluation: verification, identification, error rates with intervals."""
