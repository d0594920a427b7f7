"""OneVision model library: catalog format, product world, encoders, metrics and evaluation.

It never talks to Kafka, Redis or Ray; those live in `streaming`, `features`, `serving`, `infra`.
"""

__version__ = "0.1.0"
