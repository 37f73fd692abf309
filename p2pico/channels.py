"""Channels: tags, event and query policies, family channels (catalog §3.1, §3.9).

Neighbours: p2pico.engine (stores channel records in the pico's state, checks
every event and query that names an ECI here), krl (``ctx:newChannel`` and the
other ``ctx:`` actions reach these through the engine's Context).

A channel record, as stored in the state's ``channels`` block (eci → record)::

    {"tags": [str, ...], "family": bool,
     "eventPolicy": {"allow": [{"domain", "name"}], "deny": [...]},   # absent: allow all
     "queryPolicy": {"allow": [{"rid", "name"}], "deny": [...]},      # absent: allow all
     "owner": DID}                                                    # family channels only

Records without policies (every channel made before policies existed, such as
the first channel of ``p2pico pico new``) allow everything, so their state and
CIDs did not have to change.  A family channel's ``owner`` is the only pico that
may use it (pico-framework's ``familyChannelPicoID``): the child on the parent's
``system,parent`` channel, the parent on the child's ``system,child`` channel.
Its policies are not consulted.

The check, as pico-framework's ``Channel.assert*Policy``: a family channel
refuses everyone but its owner; then the deny list ("Denied by channel
policy"), then the allow list ("Not allowed by channel policy").  A rule's
fields are non-blank strings, ``"*"`` matches anything, nothing else globs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

FAMILY_REFUSED = "This is a family channel and only the owner can use it."
DENIED = "Denied by channel policy"
NOT_ALLOWED = "Not allowed by channel policy"

ALLOW_ALL_EVENTS: dict[str, object] = {"allow": [{"domain": "*", "name": "*"}], "deny": []}
ALLOW_ALL_QUERIES: dict[str, object] = {"allow": [{"rid": "*", "name": "*"}], "deny": []}

_TAGS_MESSAGE = "Channel `tags` must be an array of non-empty strings."


class ChannelError(ValueError):
    """A channel request that is not allowed or not well formed; the text is the reference's."""


def clean_tags(tags: object) -> list[str]:
    """pico-framework's ``cleanChannelTags``: collapse blanks, other runs to ``-``, lower case."""
    if not isinstance(tags, list):
        raise ChannelError(_TAGS_MESSAGE)
    cleaned = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ChannelError(_TAGS_MESSAGE)
        tag = re.sub(r"\s+", " ", tag).strip()
        tag = re.sub(r"[^a-z0-9_-]+", "-", tag, flags=re.IGNORECASE)
        tag = re.sub(r"-+", "-", tag)
        tag = re.sub(r"^-|-$", "", tag).lower()
        if not tag:
            raise ChannelError("Channel tag cannot be a blank string.")
        if tag == "system":
            raise ChannelError('Cannot tag channel as "system".')
        cleaned.append(tag)
    return cleaned


def _blank(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def _clean_policy(orig: object, kind: str, fields: tuple[str, str]) -> dict[str, object]:
    if not isinstance(orig, Mapping) or sorted(orig) != ["allow", "deny"]:
        raise ChannelError(f"{kind} expects {{allow: {kind}Rule[], deny: {kind}Rule[]}}")
    allow, deny = orig["allow"], orig["deny"]
    if not isinstance(allow, list) or not isinstance(deny, list):
        raise ChannelError(f"{kind} expects {{allow: {kind}Rule[], deny: {kind}Rule[]}}")
    a, b = fields

    def rule(r: object) -> dict[str, str]:
        if (
            not isinstance(r, Mapping)
            or sorted(r) != sorted(fields)
            or _blank(r[a])
            or _blank(r[b])
        ):
            raise ChannelError(f"{kind}Rule expects {{{a}: string, {b}: string}}")
        return {a: str(r[a]).strip(), b: str(r[b]).strip()}

    return {"allow": [rule(r) for r in allow], "deny": [rule(r) for r in deny]}


def clean_event_policy(orig: object) -> dict[str, object]:
    return _clean_policy(orig, "EventPolicy", ("domain", "name"))


def clean_query_policy(orig: object) -> dict[str, object]:
    return _clean_policy(orig, "QueryPolicy", ("rid", "name"))


def new_record(tags: object, event_policy: object, query_policy: object) -> dict[str, object]:
    """A user channel; a null (None) policy is allow-all, as the reference."""
    return {
        "tags": clean_tags(tags if tags is not None else []),
        "eventPolicy": ALLOW_ALL_EVENTS
        if event_policy is None
        else clean_event_policy(event_policy),
        "queryPolicy": ALLOW_ALL_QUERIES
        if query_policy is None
        else clean_query_policy(query_policy),
        "family": False,
    }


def updated_record(
    record: Mapping[str, object], tags: object, event_policy: object, query_policy: object
) -> dict[str, object]:
    """``ctx:putChannel``: what is given replaces what was; a family channel stays as it is."""
    new = dict(record)
    if record.get("family"):
        return new
    if tags is not None:
        new["tags"] = clean_tags(tags)
    if event_policy is not None:
        new["eventPolicy"] = clean_event_policy(event_policy)
    if query_policy is not None:
        new["queryPolicy"] = clean_query_policy(query_policy)
    return new


def family_record(tags: list[str], owner: str) -> dict[str, object]:
    return {"tags": tags, "family": True, "owner": owner}


def self_record(did: str) -> dict[str, object]:
    """The ``system,self`` channel: its id is the DID; not stored, it cannot change."""
    return family_record(["system", "self"], did)


def _matches(rules: object, a: str, b: str, first: str, second: str) -> bool:
    for r in rules if isinstance(rules, list) else []:
        if not isinstance(r, Mapping):
            continue
        if r.get(a) in ("*", first) and r.get(b) in ("*", second):
            return True
    return False


def _check(policy: object, a: str, b: str, first: str, second: str) -> None:
    if not isinstance(policy, Mapping):
        return  # absent: allow all
    if _matches(policy.get("deny"), a, b, first, second):
        raise ChannelError(DENIED)
    if not _matches(policy.get("allow"), a, b, first, second):
        raise ChannelError(NOT_ALLOWED)


def _check_family(record: Mapping[str, object], sender: str | None) -> bool:
    """True when the record is a family channel its owner is using; raise for anyone else."""
    if not record.get("family"):
        return False
    if sender is None or record.get("owner") != sender:
        raise ChannelError(FAMILY_REFUSED)
    return True


def check_event(record: Mapping[str, object], domain: str, name: str, sender: str | None) -> None:
    if not _check_family(record, sender):
        _check(record.get("eventPolicy"), "domain", "name", domain, name)


def check_query(record: Mapping[str, object], rid: str, name: str, sender: str | None) -> None:
    if not _check_family(record, sender):
        _check(record.get("queryPolicy"), "rid", "name", rid, name)


def tags_of(record: Mapping[str, object]) -> list[str]:
    tags = record.get("tags")
    return [str(t) for t in tags] if isinstance(tags, list) else []


def view(eci: str, record: Mapping[str, object]) -> dict[str, object]:
    """A channel as KRL sees it (``ctx:channels``): the reference's read-only shape."""
    return {
        "id": eci,
        "tags": tags_of(record),
        "eventPolicy": record.get("eventPolicy", ALLOW_ALL_EVENTS),
        "queryPolicy": record.get("queryPolicy", ALLOW_ALL_QUERIES),
        "familyChannelPicoID": record.get("owner") if record.get("family") else None,
    }
