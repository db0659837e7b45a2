"""Every action the dashboard offers, grouped as the Actions page shows them."""
from __future__ import annotations

from dashboard.actions.framework import Action
from dashboard.actions.store_actions import CompactStore, PurgeRawData

AREAS: dict[str, list[type[Action]]] = {
    "perfdeck store": [PurgeRawData, CompactStore],
}


def by_name(name: str) -> type[Action] | None:
    return next((a for actions in AREAS.values() for a in actions if a.name == name), None)
