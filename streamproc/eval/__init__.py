"""Accuracy measurement: verification, identification, open-set, per-track rates, demographics, with intervals.

Uses ``vision`` (faces from photos) and ``search`` (calibration, policy); never the running pipeline.
"""
