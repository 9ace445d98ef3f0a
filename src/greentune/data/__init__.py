"""Data: sources, validation, features, chronological splits and windows; text datasets."""
