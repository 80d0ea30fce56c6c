"""FHIR R4, MedCom and TouchStone checks: the gate on what we send, the checks on receipt, `integration validate`."""
