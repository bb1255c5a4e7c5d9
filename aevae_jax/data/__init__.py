"""Data: splits as arrays, their description, validation and the on-device preprocessing."""
