"""The edges: RabbitMQ (the only user of pika), the SQL audit store, the in-memory bus, the health server."""
