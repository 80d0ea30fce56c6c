"""The one place where files are read and the pipeline is wired together."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree

from integration.config import Settings
from integration.errors import ConfigurationError
from integration.flows.acknowledging import AckContext, Acknowledger
from integration.flows.closing import ClosingContext
from integration.flows.dispatch import FLOWS, Pipeline, answer_unprocessable, handler
from integration.flows.hotline import HotlineContext
from integration.flows.referral import ReferralContext
from integration.formats.json_contract import JsonContract
from integration.mappings import load_mappings
from integration.service.processor import Handler, Unprocessable
from integration.topology import ACK_EXCHANGE


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
            routing=mappings.referral_routing,
        ),
        max_payload_bytes=settings.max_payload_bytes,
        advice_contract=load_contract(settings.schemas_dir, "advice-request.schema.json"),
        hotline=HotlineContext(
            hotlines=mappings.hotlines,
            timezone=ZoneInfo(hotline["timezone"]),
            replies=hotline["replies"],
            exchange=hotline["routing"]["exchange"],
            queue_key=hotline["routing"]["queue"],
            reply_key=hotline["routing"]["reply"],
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
            exchange="rehab.status",
            gp_key="gp.status.{ydernummer}",
            dhrd_key="hospital.dhrd.{sor}",
        ),
        acknowledger=Acknowledger(
            AckContext(exchange=ACK_EXCHANGE, routing_key="ack.{sor}", terminology=mappings.terminology)
        ),
        municipality_sors=frozenset(
            m.endpoint.sor for m in mappings.directory.municipalities.values() if m.endpoint is not None
        ),
    )


def flow_handlers(pipeline: Pipeline) -> dict[str, Handler]:
    """The handler of each flow's inbound queue: one per row of the dispatch table (`flows.dispatch.FLOWS`)."""
    return {flow: handler(pipeline, flow) for flow in FLOWS}


def unprocessable_answer(pipeline: Pipeline) -> Unprocessable:
    """What the processor sends for a message it gives up on for now."""
    return lambda body, now: answer_unprocessable(body, pipeline, now)
