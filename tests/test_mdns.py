"""mDNS discovery: the codec (protocols.mdns), and two ``p2pico node --mdns`` processes that
find each other without bootstrap inside a private network namespace (``unshare -n``: only
``lo``, so nothing is multicast on the host's network).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from protocols import mdns

PEER = "12D3KooWEDPWCeofaQMLCmCJzR7ewLGkEwof2SYYaux7PR42vXWZ"
ADDRS = [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}", f"/ip4/10.0.0.2/tcp/4001/p2p/{PEER}"]


def test_query_and_response_round_trip() -> None:
    query = mdns.decode(mdns.encode_query())
    assert mdns.asks_for(query)
    assert not query.is_response
    assert mdns.addresses(query) == []
    answer = mdns.decode(mdns.encode_response("a1b2", ADDRS))
    assert answer.is_response
    assert not mdns.asks_for(answer)
    assert mdns.addresses(answer) == ADDRS
    assert mdns.addresses(answer, service="_other._udp.local") == []


def _name(*labels: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"


def test_compressed_names_as_other_implementations_send_them() -> None:
    # A response whose PTR target and TXT owner point back into the message (RFC 1035
    # §4.1.4), with an A record in between that is not ours, and a TXT string that is not
    # a dnsaddr: only the dnsaddr of the PTR's instance is taken.
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 2)
    service_at = 12
    ptr_owner = _name("_p2p", "_udp", "local")
    instance = bytes([4]) + b"peer" + struct.pack("!H", 0xC000 | service_at)
    ptr = ptr_owner + struct.pack("!HHIH", 12, 1, 120, len(instance)) + instance
    instance_at = service_at + len(ptr_owner) + 10
    a_rec = _name("host", "local") + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([10, 0, 0, 2])
    texts = b"".join(bytes([len(t)]) + t for t in (b"other=1", f"dnsaddr={ADDRS[0]}".encode()))
    txt = struct.pack("!H", 0xC000 | instance_at) + struct.pack("!HHIH", 16, 1, 120, len(texts))
    message = mdns.decode(header + ptr + a_rec + txt + texts)
    assert [r.type for r in message.records] == [12, 1, 16]
    assert message.records[0].target == "peer._p2p._udp.local"
    assert mdns.addresses(message) == [ADDRS[0]]


def test_bad_messages_name_the_byte() -> None:
    good = mdns.encode_response("a1b2", ADDRS)
    with pytest.raises(mdns.MdnsError, match=r"^byte 0: a DNS message has a 12-byte header"):
        mdns.decode(good[:7])
    with pytest.raises(mdns.MdnsError, match=r"^byte \d+: .*runs past the end"):
        mdns.decode(good[:-5])
    loop = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + struct.pack("!H", 0xC000 | 12) + b"\0" * 4
    with pytest.raises(mdns.MdnsError, match=r"^byte 12: a name pointer loops"):
        mdns.decode(loop)
    with pytest.raises(mdns.MdnsError, match="must be 1 to 63 bytes"):
        mdns.encode_response("x" * 64, ADDRS)


# Runs inside the namespace: two nodes with --mdns and no bootstrap; each must learn the
# other's root pico record, which only a connection (then the mesh's catch-up) brings.
_INSIDE = r"""
import json, subprocess, sys, httpx
from pathlib import Path
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
tmp = Path(sys.argv[1])
nodes = []
try:
    for name in "ab":
        log = (tmp / f"{name}.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pico", "--home", str(tmp / name), "node", "--mdns"],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        info = next(json.loads(l)["ready"] for l in proc.stdout if l.startswith("{"))
        nodes.append((proc, info))
    roots = []
    for _, info in nodes:
        picos = httpx.get(info["http"] + "/api/picos", timeout=30).json()
        roots.append(next(p["did"] for p in picos if p.get("root")))
    seen = {}
    for (_, info), other_root, (_, other) in zip(nodes, reversed(roots), reversed(nodes)):
        r = httpx.get(f"{info['http']}/api/records/{other_root}",
                      params={"after": -1, "wait": 30}, timeout=60)
        seen[info["peer_id"]] = [r.status_code, r.json().get("host"), other["peer_id"]]
    print(json.dumps(seen))
finally:
    for proc, _ in nodes:
        proc.terminate()
        proc.wait(timeout=30)
"""


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_two_nodes_find_each_other_by_mdns_in_a_private_namespace(tmp_path: Path) -> None:
    why = _can_unshare()
    if why is not None:
        if os.environ.get("P2PICO_REQUIRE_NETNS"):
            pytest.fail(why)
        pytest.skip(why)
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", _INSIDE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[1],
    )
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("*.log")))
    assert done.returncode == 0, done.stdout + done.stderr + logs[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen) == 2
    for peer, (status, host, other) in seen.items():
        assert status == 200, (seen, logs[-3000:])
        assert host == other, (seen, logs[-3000:])
        assert other != peer
    assert "mDNS: connected to" in logs
