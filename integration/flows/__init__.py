"""One module per flow: an inbound record and the context → outgoing messages and audit facts (pure)."""
