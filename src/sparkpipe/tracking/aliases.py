"""Alias moves and their history: the one function that moves aliases, recorded as registered-model
tags, and the rollback that reads that history."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ModelError, SparkpipeError

if TYPE_CHECKING:
    from sparkpipe.tracking.registry import Registry

log = logging.getLogger(__name__)


HISTORY_TAG_PREFIX = "sparkpipe.alias_move."
"""Registered-model tags holding the alias history: one tag per move, ``<prefix><time_ns>-<n>``."""


@dataclass
class AliasMove:
    """One recorded alias move."""

    time: float
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
            "actor": self.actor,
        }


_move_lock = threading.Lock()


def move_aliases(
    registry: Registry, name: str, moves: dict[str, str | None], *, reason: str, actor: str
) -> list[AliasMove]:
    """Point each alias of ``moves`` at its version (``None``: delete the alias) and record every move.

    The one function that moves aliases: training runs, ``sparkpipe models promote|rollback``, the
    service's promote endpoints and the A/B promotion all call it. Each move is kept as a tag of the
    registered model (``sparkpipe.alias_move.*``: time, alias, from, to, reason, actor), so the history
    lives in the registry and survives restarts. Several aliases move together (A/B promotion swaps
    ``champion`` and ``challenger``): if one move fails, those already made are put back before the
    error is raised. An alias already at its target is not moved and not recorded.

    Returns
    -------
    list[AliasMove]
        The moves made, in order.
    """
    if not moves:
        return []
    with _move_lock:
        current = registry.aliases(name)
        done: list[AliasMove] = []
        try:
            for alias, version in moves.items():
                before = current.get(alias)
                target = None if version is None else str(version).strip()
                if before == target:
                    continue
                if target is None:
                    registry.delete_alias(name, alias)
                else:
                    registry.set_alias(name, alias, target)
                done.append(AliasMove(time.time(), alias, before, target, reason, actor))
        except Exception as exc:
            for move in reversed(done):  # put back what moved before the failure
                with contextlib.suppress(Exception):
                    if move.from_version is None:
                        registry.delete_alias(name, move.alias)
                    else:
                        registry.set_alias(name, move.alias, move.from_version)
            if isinstance(exc, SparkpipeError):
                raise
            raise ModelError(f"moving aliases of {name!r} failed ({exc}); nothing was changed") from exc
        for i, move in enumerate(done):
            key = f"{HISTORY_TAG_PREFIX}{time.time_ns():020d}-{i}"
            try:
                registry.set_model_tag(name, key, json.dumps(move.to_dict())[:4900])
            except Exception as exc:  # the alias moved; say loudly that its record did not land
                log.error("%s@%s moved but its history record failed: %s", name, move.alias, exc)
        for move in done:
            log.info(
                "%s@%s: %s -> %s (%s; %s)",
                name,
                move.alias,
                move.from_version,
                move.to_version,
                move.reason,
                move.actor,
            )
        return done


def alias_history(registry: Registry, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """The recorded alias moves of ``name`` (oldest first), optionally of one alias only."""
    out = []
    for key, value in sorted(registry.model_tags(name).items()):
        if not key.startswith(HISTORY_TAG_PREFIX):
            continue
        try:
            event = json.loads(value)
        except ValueError:
            continue
        if isinstance(event, dict) and (alias is None or event.get("alias") == alias):
            out.append(event)
    return out


def rollback_alias(
    registry: Registry, name: str, alias: str = "champion", *, reason: str, actor: str
) -> AliasMove:
    """Point ``alias`` back at the version it pointed at before its current one (from the history).

    Raises
    ------
    ModelError
        No recorded earlier version (the history starts with the alias's first move).
    """
    current = registry.aliases(name).get(alias)
    previous = None
    for event in reversed(alias_history(registry, name, alias)):
        if event.get("to") == current and event.get("from") not in (None, current):
            previous = event["from"]
            break
    if previous is None:
        raise ModelError(
            f"{name}@{alias} has no recorded previous version to roll back to (now: {current}); "
            f"point it explicitly with `sparkpipe models promote {name} VERSION --alias {alias}`"
        )
    registry.resolve(f"{name}/{previous}")  # the version still exists
    return move_aliases(registry, name, {alias: previous}, reason=reason, actor=actor)[0]
