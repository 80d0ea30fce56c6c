"""Inbound formats: hardened decoding, contract validation, and parsing into typed records."""
