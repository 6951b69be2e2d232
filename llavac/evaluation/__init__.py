"""Evaluation: metrics, calibration, significance."""
