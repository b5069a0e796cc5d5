"""Tracker helpers: W&B offline-first, the config as hyperparameters, finishing runs."""
