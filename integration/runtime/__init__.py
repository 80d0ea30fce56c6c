"""I/O at the edges: RabbitMQ (pika), the audit store (SQLite, PostgreSQL), the consumer loop."""
