"""Outbound MedCom FHIR messages: one envelope for the referral, CareCommunication, status document and ack."""
