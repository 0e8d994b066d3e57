"""Evaluation: benchmark readers, answer extraction and scoring, sharded runner, reports."""
