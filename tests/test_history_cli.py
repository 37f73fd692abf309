"""`p2pico export`, `import` and `log` between two real nodes that never meet (p2pico/history.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pico.testing import NodeProcess, cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[NodeProcess] = []

    def start(name: str) -> NodeProcess:
        node = start_node(tmp_path / name, log_dir=tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def test_export_then_import_on_another_node_and_log_there(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = nodes("a"), nodes("b")
    did = cli("pico", "new", "--ruleset", str(COUNTER), node=a)["did"]
    for _ in range(3):
        cli("event", did, "counter:inc", "by=2", node=a)
    file = tmp_path / "pico.car"

    exported = cli("export", did, "-o", str(file), node=a)
    [head] = [p["head"] for p in cli("pico", "list", node=a) if p["did"] == did]
    assert exported["did"] == did
    assert exported["root"] == head
    assert exported["bytes"] == file.stat().st_size
    assert not file.with_name("pico.car.part").exists()

    imported = cli("import", str(file), node=b)
    assert imported == {
        "root": head,
        "did": did,
        "seq": 3,
        "blocks": exported["blocks"],
        "new": exported["blocks"],
    }
    log_b = cli("log", did, "--node", b.url)  # --node may follow the sub-command
    assert log_b["verified"] is True
    assert [h["seq"] for h in log_b["heads"]] == [3, 2, 1, 0]
    assert log_b == cli("log", did, node=a)
    hosted_b = [p["did"] for p in cli("pico", "list", node=b) if not p.get("root")]
    assert hosted_b == []  # imported for audit, not hosted (only b's own root pico is)

    missing = cli(
        "log", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", node=b, exit_code=1
    )
    assert "no history of" in missing["error"]
    file.write_bytes(file.read_bytes()[:-3])
    refused = cli("import", str(file), node=b, exit_code=1)
    assert "truncated section" in refused["error"]


def test_encrypted_export_for_pinning_and_import_with_the_key(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = nodes("a"), nodes("b")
    did = cli("pico", "new", "--ruleset", str(COUNTER), node=a)["did"]
    for _ in range(2):
        cli("event", did, "counter:inc", "by=5", node=a)
    file = tmp_path / "sealed.car"

    sealed = cli("export", did, "-o", str(file), "--encrypt", node=a)
    [head] = [p["head"] for p in cli("pico", "list", node=a) if p["did"] == did]
    key_file = tmp_path / "sealed.car.key"
    assert sealed["key_file"] == str(key_file)
    assert sealed["head"] == head
    assert sealed["root"] != head
    assert key_file.stat().st_mode & 0o777 == 0o600
    data = file.read_bytes()
    assert sealed["bytes"] == len(data)
    assert did.encode() not in data  # nor any plaintext CID (tests/dag/test_dag_sealed.py)
    assert not file.with_name("sealed.car.part").exists()

    # without the key the CAR is only sealed blocks: the node refuses it as a pico history
    assert "import refused" in cli("import", str(file), node=b, exit_code=1)["error"]
    wrong = tmp_path / "wrong.key"
    wrong.write_text("00" * 32 + "\n")
    refused = cli("import", str(file), "--key", str(wrong), node=b, exit_code=1)
    assert "with this key (a wrong key, or an altered block)" in refused["error"]

    imported = cli("import", str(file), "--key", str(key_file), node=b)
    assert (imported["root"], imported["did"], imported["seq"]) == (head, did, 2)
    assert cli("log", did, node=b) == cli("log", did, node=a)
