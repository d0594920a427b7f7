"""Event schema, producers, consumer workers and dead-letter handling for the click stream."""
