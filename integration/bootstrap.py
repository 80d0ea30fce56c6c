"""The one place where files are read and the pipeline is wired together."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree

from integration.config import Settings
from integration.domain.course import State
from integration.errors import ConfigurationError
from integration.flows.acknowledging import AckContext, Acknowledger
from integration.flows.closing import ClosingContext
from integration.flows.dispatch import Pipeline, answer_unprocessable, transform
from integration.flows.hotline import HotlineContext
from integration.flows.referral import ReferralContext, ReferralRouting
from integration.flows.results import FlowResult
from integration.formats.json_contract import JsonContract
from integration.mappings import load_mappings
from integration.service.processor import Handler, Unprocessable
from integration.topology import (
    ACKNOWLEDGEMENT,
    HOTLINE_REPLY,
    HOTLINE_REQUEST,
    REFERRAL_TO_HOSPITAL,
    REFERRAL_TO_MUNICIPALITY,
    STATUS_TO_DHRD,
    STATUS_TO_GP,
)


def load_contract(schemas_dir: Path, name: str) -> JsonContract:
    path = schemas_dir / name
    try:
        return JsonContract(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load schema {path}: {exc}") from None


def load_xml_schema(schemas_dir: Path, name: str) -> etree.XMLSchema:
    path = schemas_dir / name
    try:
        return etree.XMLSchema(etree.parse(str(path)))
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise ConfigurationError(f"cannot load schema {path}: {exc}") from None


def build_pipeline(settings: Settings) -> Pipeline:
    mappings = load_mappings(settings.mappings_dir)
    hotline = mappings.hotline_settings
    return Pipeline(
        discharge_contract=load_contract(settings.schemas_dir, "discharge-event.schema.json"),
        referral=ReferralContext(
            directory=mappings.directory,
            rules=mappings.referral_rules,
            terminology=mappings.terminology,
            routing=ReferralRouting(
                exchange=REFERRAL_TO_MUNICIPALITY.exchange,
                municipality_key=REFERRAL_TO_MUNICIPALITY.key,
                hospital_key=REFERRAL_TO_HOSPITAL.key,
            ),
        ),
        max_payload_bytes=settings.max_payload_bytes,
        advice_contract=load_contract(settings.schemas_dir, "advice-request.schema.json"),
        hotline=HotlineContext(
            hotlines=mappings.hotlines,
            timezone=ZoneInfo(hotline["timezone"]),
            replies=hotline["replies"],
            exchange=HOTLINE_REQUEST.exchange,
            queue_key=HOTLINE_REQUEST.key,
            reply_key=HOTLINE_REPLY.key,
            reply_contract=load_contract(settings.schemas_dir, "advice-reply.schema.json"),
            triage_phone=str(hotline["triagePhone"]),
            regional_on_call=hotline["regionalOnCall"],
            terminology=mappings.terminology,
        ),
        closing_schema=load_xml_schema(settings.schemas_dir, "closing-report.xsd"),
        closing=ClosingContext(
            terminology=mappings.terminology,
            directory=mappings.directory,
            gp_clinics=mappings.gp_clinics,
            exchange=STATUS_TO_GP.exchange,
            gp_key=STATUS_TO_GP.key,
            dhrd_key=STATUS_TO_DHRD.key,
        ),
        acknowledger=Acknowledger(
            AckContext(
                exchange=ACKNOWLEDGEMENT.exchange, routing_key=ACKNOWLEDGEMENT.key, terminology=mappings.terminology
            )
        ),
        municipality_sors=frozenset(
            m.endpoint.sor for m in mappings.directory.municipalities.values() if m.endpoint is not None
        ),
    )


def flow_handlers(pipeline: Pipeline) -> dict[str, Handler]:
    """The handler of each flow's inbound queue; a later flow adds one entry."""

    def discharge(body: bytes, now: datetime, state: State) -> FlowResult:
        return transform(body, pipeline, now, accepted=("discharge-event",), state=state)

    def hotline(body: bytes, now: datetime, state: State) -> FlowResult:
        return transform(body, pipeline, now, accepted=("advice-request", "care-communication"), state=state)

    def closing(body: bytes, now: datetime, state: State) -> FlowResult:
        return transform(body, pipeline, now, accepted=("closing-report",), state=state)

    def acknowledgement(body: bytes, now: datetime, state: State) -> FlowResult:
        return transform(body, pipeline, now, accepted=("acknowledgement",), state=state)

    return {"discharge": discharge, "hotline": hotline, "closing": closing, "acknowledgement": acknowledgement}


def unprocessable_answer(pipeline: Pipeline) -> Unprocessable:
    """What the processor sends for a message it gives up on for now."""
    return lambda body, now: answer_unprocessable(body, pipeline, now)
