"""Outbound FHIR R4: builders of plain JSON-ready dicts in MedCom's messaging style, and their validation."""
