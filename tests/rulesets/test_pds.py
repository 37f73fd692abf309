"""rulesets/io.picolabs.pds.krl: the events and functions of pico-engine 1.4's pds
(catalog §5.3), driven over HTTP on one node."""

from __future__ import annotations

import json
from typing import Any

from conftest import PDS, WITNESS, WRANGLER, Node

from p2pico import builtin

# 2023-11-14T22:13:20Z and one hour later
T0, T1 = 1_700_000_000, 1_700_003_600


async def test_data_in_namespaces(node: Node) -> None:
    did = await node.new_pico(WITNESS)
    await node.ok(did, "pds:new_data_available", namespace="garden", key="roses", value=3)
    await node.ok(
        did, "pds:new_data_available", namespace="garden", key="tulips", value={"colour": "red"}
    )
    await node.ok(did, "pds:new_data_available", namespace="shed", key="spades", value=1)
    assert await node.seen(did, "data_added") == [
        {"namespace": "garden", "keyvalue": "roses"},
        {"namespace": "garden", "keyvalue": "tulips"},
        {"namespace": "shed", "keyvalue": "spades"},
    ]
    garden = {"roses": 3, "tulips": {"colour": "red"}}
    assert await node.query(did, PDS, "items", namespace="garden", key="roses") == {
        "status": "success",
        "general": 3,
    }
    assert await node.query(did, PDS, "items", namespace="garden") == {
        "status": "success",
        "general": garden,
    }
    assert await node.query(did, PDS, "items") == {
        "status": "failed",
        "general": {"garden": garden, "shed": {"spades": 1}},
    }
    assert await node.query(did, PDS, "get_keys", namespace="garden") == ["roses", "tulips"]

    # updated_data_available merges a map into the item, one field at a time.
    await node.ok(
        did,
        "pds:updated_data_available",
        namespace="garden",
        key="tulips",
        value={"height": 30, "colour": "yellow"},
    )
    assert (await node.query(did, PDS, "items", namespace="garden", key="tulips"))["general"] == {
        "colour": "yellow",
        "height": 30,
    }
    assert (
        await node.seen(did, "data_updated") == [{"namespace": "garden", "keyvalue": "tulips"}] * 2
    )

    await node.ok(did, "pds:remove_old_data", namespace="garden", key="roses")
    assert await node.seen(did, "data_deleted") == [{"namespace": "garden", "keyvalue": "roses"}]
    assert await node.query(did, PDS, "get_keys", namespace="garden") == ["tulips"]

    await node.ok(
        did, "pds:map_item", namespace="shed", mapvalues=json.dumps({"rakes": 2, "hoes": 0})
    )
    assert await node.seen(did, "new_map_added") == [
        {"namespace": "shed", "mapvalues": {"rakes": 2, "hoes": 0}}
    ]
    assert (await node.query(did, PDS, "items", namespace="shed"))["general"] == {
        "rakes": 2,
        "hoes": 0,
    }

    await node.ok(did, "pds:remove_namespace", namespace="shed")
    assert await node.seen(did, "namespace_deleted") == [{"namespace": "shed"}]
    assert await node.query(did, PDS, "items") == {
        "status": "failed",
        "general": {"garden": {"tulips": {"colour": "yellow", "height": 30}}},
    }

    await node.ok(did, "pds:clear_all_data")
    assert await node.query(did, PDS, "items") == {"status": "failed", "general": None}
    assert await node.query(did, PDS, "profile") == {"status": "success", "profile": None}


async def test_the_profile_is_seeded_with_the_picos_name_and_kept_up_to_date(node: Node) -> None:
    node.engine.clock = lambda: T0
    did = await node.new_pico(WITNESS, name="Ada")
    profile = (await node.query(did, PDS, "profile"))["profile"]
    photo = profile.pop("photo")
    assert photo.startswith("data:image/svg+xml;base64,")
    assert profile == {
        "name": "Ada",
        "description": "",
        "_created": "20231114T221320+0000",
        "_modified": "20231114T221320+0000",
    }
    assert await node.seen(did, "profile_updated") == [{"name": "Ada", "_status": "success"}]

    node.engine.clock = lambda: T1
    await node.ok(did, "pds:updated_profile", description="mathematician", email="ada@example.org")
    profile = (await node.query(did, PDS, "profile"))["profile"]
    assert profile == {
        "name": "Ada",
        "description": "mathematician",
        "photo": photo,
        "email": "ada@example.org",
        "_created": "20231114T221320+0000",
        "_modified": "20231114T231320+0000",
    }
    assert (await node.seen(did, "profile_updated"))[-1] == {
        "description": "mathematician",
        "email": "ada@example.org",
        "_status": "success",
    }
    assert await node.query(did, PDS, "profile", key="email") == {
        "status": "success",
        "profile": "ada@example.org",
    }
    # Other fields are kept as given.
    await node.ok(did, "pds:updated_profile", website="https://example.org")
    profile = (await node.query(did, PDS, "profile"))["profile"]
    assert profile["website"] == "https://example.org"
    assert profile["email"] == "ada@example.org"

    # Nothing to update: a failure, and the profile stays.
    await node.ok(did, "pds:updated_profile")
    assert (await node.seen(did, "profile_updated"))[-1] == {"_status": "failure"}
    assert (await node.query(did, PDS, "profile"))["profile"] == profile


async def test_settings_per_ruleset(node: Node) -> None:
    did = await node.new_pico(WITNESS)
    await node.ok(
        did,
        "pds:add_settings",
        name="Thermostat",
        keyed_rid="io.example.thermostat",
        schema=["target"],
        data_key="target",
        value=21,
    )
    await node.ok(
        did,
        "pds:add_settings",
        name="Thermostat",
        keyed_rid="io.example.thermostat",
        data_key="unit",
        value="C",
    )
    await node.ok(did, "pds:add_settings", name="Lamp", keyed_rid="io.example.lamp")
    thermostat = {
        "name": "Thermostat",
        "rid": "io.example.thermostat",
        "schema": ["target"],
        "data": {"target": 21, "unit": "C"},
    }

    async def settings(**args: Any) -> Any:
        answer = await node.query(did, PDS, "settings", **args)
        assert answer["status"] == "success"
        return answer["settings"]

    assert await settings() == {
        "io.example.thermostat": thermostat,
        "io.example.lamp": {"name": "Lamp", "rid": "io.example.lamp"},
    }
    assert await settings(Rid="io.example.thermostat") == thermostat
    assert await settings(Rid="io.example.thermostat", Key="schema") == ["target"]
    assert await settings(Rid="io.example.thermostat", Key="data", detail="unit") == "C"
    assert await node.query(did, PDS, "settings_names") == [
        {"setRID": "io.example.thermostat", "setName": "Thermostat"},
        {"setRID": "io.example.lamp", "setName": "Lamp"},
    ]
    assert (
        await node.query(
            did, PDS, "get_setting_data_value", setRID="io.example.thermostat", setKey="target"
        )
        == 21
    )
    assert (
        await node.query(did, PDS, "config_value", setKey="target", setRID="io.example.thermostat")
        == 21
    )
    assert await node.query(did, PDS, "config_value", setKey="target") is None
    assert len(await node.seen(did, "settings_added")) == 3

    # Without keyed_rid nothing is stored.
    await node.ok(did, "pds:add_settings", name="Nameless")
    assert len(await node.seen(did, "settings_added")) == 3


async def test_the_pds_channel_takes_pds_events_and_pds_queries_only(node: Node) -> None:
    did = await node.new_pico()
    [channel] = node.tagged(did, "pds")
    eci = channel["id"]
    assert channel["queryPolicy"] == {"allow": [{"rid": PDS, "name": "*"}], "deny": []}
    await node.ok(eci, "pds:new_data_available", namespace="n", key="k", value="v")
    assert (await node.query(eci, PDS, "items", namespace="n", key="k"))["general"] == "v"
    refused = {"error": "Not allowed by channel policy"}
    assert await node.event(eci, "wrangler:new_child_request", name="x") == refused
    assert await node.query(eci, WRANGLER, "myself") == refused

    # Installing pds again (or the engine starting) keeps the one channel.
    await node.ok(did, "wrangler:install_ruleset_request", url=builtin.url(PDS))
    await node.ok(did, "engine:started")
    assert node.tagged(did, "pds") == [channel]
    assert await node.query(did, PDS, "getChannelEci") == eci
    # The data survived the reinstall.
    assert (await node.query(did, PDS, "items", namespace="n", key="k"))["general"] == "v"


async def test_a_root_pico_gets_its_pds_channel_when_the_engine_starts(node: Node) -> None:
    did = await node.new_pico(builtin.source(WRANGLER), builtin.source(PDS), wrangler=False)
    assert node.tagged(did, "pds") == []
    await node.ok(did, "engine:started")
    [channel] = node.tagged(did, "pds")
    assert await node.query(did, PDS, "getChannelEci") == channel["id"]
