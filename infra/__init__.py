"""Embedded development services (Kafka-compatible broker, Redis), their settings and manifests."""
