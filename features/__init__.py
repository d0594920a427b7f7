"""The Feast feature repo (user and item features) and the thin client streaming and serving use."""
