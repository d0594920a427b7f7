"""Evaluation metrics: retrieval (HR@K, MRR@K) here; SID quality metrics beside it."""
