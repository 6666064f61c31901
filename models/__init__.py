"""Recommender, augmentation and evaluation (filled in by the training issues)."""
