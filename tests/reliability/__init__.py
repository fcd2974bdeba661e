"""Reliability: model-based, hostile-input, fault and load tests."""
