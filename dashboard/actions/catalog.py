"""Every action the dashboard offers, grouped as the Actions page shows them."""
from __future__ import annotations

from dashboard.actions.alert_actions import EndSilence, SilenceAlerts
from dashboard.actions.app_cache import ClearAppCache
from dashboard.actions.database_actions import Analyze, CreateIndex, DropIndex, ResetStatements, Vacuum
from dashboard.actions.framework import Action
from dashboard.actions.pg_backends import CancelBackend, ExplainStatement, TerminateBackend
from dashboard.actions.redis_actions import BumpCacheVersion, DeleteKeys, FlushDatabase
from dashboard.actions.store_actions import CompactStore, PurgeRawData

AREAS: dict[str, list[type[Action]]] = {
    "App caches": [ClearAppCache],
    "Redis": [DeleteKeys, BumpCacheVersion, FlushDatabase],
    "Database": [Analyze, Vacuum, CreateIndex, DropIndex, ResetStatements, CancelBackend, TerminateBackend,
                 ExplainStatement],
    "perfdeck store": [PurgeRawData, CompactStore],
    "Alerts": [SilenceAlerts, EndSilence],
}

