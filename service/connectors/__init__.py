"""Platform connectors: one module per platform, each inbound (verify the platform's signature, parse its payload
into comment events) and outbound (carry replies and moderation decisions to the platform), selected by a source's
`kind`. Adding a platform is adding a module here and its entry below.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.connectors.base import NEEDS, Capability, Connector
from service.connectors.discourse import DiscourseConnector
from service.connectors.standard import StandardConnector
from service.connectors.wordpress import WordPressConnector
from service.models import Source

CONNECTORS: Mapping[str, Connector] = {
    c.kind: c for c in (StandardConnector(), WordPressConnector(), DiscourseConnector())
}


def connector_for(kind: str) -> Connector:
    """The connector of a source kind (kinds are validated when a source is created)."""
    return CONNECTORS[kind]


def capabilities(source: Source) -> list[Capability]:
    """What Switchboard can do on the source's platform, as configured now."""
    return connector_for(source.kind).capabilities(source)


def can_send(source: Source, event_type: str) -> bool:
    """Whether the source's platform takes this outbound event (`reply.created`, `comment.held`, ...)."""
    return NEEDS[event_type] in capabilities(source)
