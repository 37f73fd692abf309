"""Files named on the ``p2pico`` command line that cannot be read or written: one line naming
the file and the reason (as cat and cp say it), exit 1, no traceback, no ``.part`` left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2pico.testing import cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"
NOWHERE = "http://127.0.0.1:9"  # never asked: the file is read before the node is


def p2pico(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "p2pico", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_a_car_or_ruleset_that_is_not_there(tmp_path: Path) -> None:
    car = tmp_path / "missing.car"
    done = p2pico("--node", NOWHERE, "import", str(car))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"p2pico: {car}: No such file or directory\n"
    done = p2pico("--node", NOWHERE, "pico", "new", "--ruleset", str(tmp_path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"p2pico: {tmp_path}: Is a directory\n"
    car.write_bytes(b"not read: the key is read first")
    key = tmp_path / "missing.car.key"
    done = p2pico("--node", NOWHERE, "import", str(car), "--key", str(key))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"p2pico: {key}: No such file or directory\n"


@pytest.mark.slow
def test_an_export_to_a_place_it_cannot_be_written(tmp_path: Path) -> None:
    node = start_node(tmp_path / "a")
    try:
        did = cli("pico", "new", "--ruleset", str(COUNTER), node=node)["did"]
        missing = tmp_path / "no" / "such" / "pico.car"
        done = p2pico("--node", node.url, "export", did, "-o", str(missing))
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"p2pico: {missing}: No such file or directory\n"
        folder = tmp_path / "folder"
        folder.mkdir()
        done = p2pico("--node", node.url, "export", did, "-o", str(folder))
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"p2pico: {folder}: Is a directory\n"
        assert not (tmp_path / "folder.part").exists()  # written, then removed
        # sealed for pinning: neither the key of a CAR not written nor the plain CAR is left
        done = p2pico("--node", node.url, "export", did, "-o", str(folder), "--encrypt")
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"p2pico: {folder}: Is a directory\n"
        assert not (tmp_path / "folder.key").exists()
        assert not (tmp_path / "folder.part").exists()
        no_key = tmp_path / "nowhere" / "sealed.key"
        sealed = tmp_path / "sealed.car"
        done = p2pico(
            "--node",
            node.url,
            "export",
            did,
            "-o",
            str(sealed),
            "--encrypt",
            "--key-file",
            str(no_key),
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"p2pico: {no_key}: No such file or directory\n"
        assert not sealed.exists()
        assert not (tmp_path / "sealed.car.part").exists()  # the plain CAR was there
        exported = cli("export", did, "-o", str(tmp_path / "pico.car"), node=node)
        assert exported["bytes"] == (tmp_path / "pico.car").stat().st_size
    finally:
        assert node.stop() == 0
