"""Scoring predictions against a built benchmark."""
