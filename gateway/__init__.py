"""The HTTP gateway: players' calls become player events on Kafka, answered by their verdicts."""
