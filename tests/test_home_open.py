"""A home that cannot be served is refused with a message naming the file and the reason:
one held by a running node, a database that is not one, one written by a newer p2pico, a
bad engine key. ``p2pico node`` prints that message and exits 1, without a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dag.store import STORE_FORMAT
from p2pico.home import HOME_FORMAT, Home, HomeError, lock_home
from p2pico.testing import start_node


def node_cli(home: Path) -> subprocess.CompletedProcess[str]:
    """``p2pico --home HOME node``, as a user runs it (it must fail before it is ready)."""
    cmd = [sys.executable, "-m", "p2pico", "--home", str(home), "node"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def set_version(file: Path, version: int) -> None:
    db = sqlite3.connect(file)
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


def test_a_home_records_the_format_of_both_databases(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.close()
    for name, form in (("blocks.sqlite", STORE_FORMAT), ("node.sqlite", HOME_FORMAT)):
        db = sqlite3.connect(tmp_path / name)
        assert db.execute("PRAGMA user_version").fetchone() == (form,)
        db.close()


def test_a_node_sqlite_of_a_newer_format_is_refused_and_the_home_opens_once_it_is_not(
    tmp_path: Path,
) -> None:
    Home(tmp_path).close()
    set_version(tmp_path / "node.sqlite", HOME_FORMAT + 1)
    with pytest.raises(HomeError) as e:
        Home(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'node.sqlite'}: format {HOME_FORMAT + 1}, written by a newer p2pico;"
        f" this one reads formats up to {HOME_FORMAT}"
    )
    set_version(tmp_path / "node.sqlite", HOME_FORMAT)
    Home(tmp_path).close()  # the refusal closed the block store it had opened


def test_a_damaged_node_sqlite_or_engine_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "node.sqlite").write_bytes(os.urandom(4096))
    with pytest.raises(HomeError) as e:
        Home(tmp_path)
    assert str(e.value) == f"{tmp_path / 'node.sqlite'}: cannot open it: file is not a database"
    key = tmp_path / "other" / "engine.key"
    key.parent.mkdir()
    key.write_bytes(b"short")
    with pytest.raises(HomeError) as e:
        Home(key.parent)
    assert str(e.value) == f"{key}: expected a 32-byte Ed25519 seed, found 5 bytes"


def test_the_lock_is_held_once_and_names_its_holder(tmp_path: Path) -> None:
    with lock_home(tmp_path):
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        # a second open file description conflicts even in the same process (flock)
        with pytest.raises(HomeError) as e, lock_home(tmp_path):
            pass
        assert str(e.value) == (
            f"{tmp_path} is served by another node (pid {os.getpid()}); stop it first, or give"
            " this one another --home"
        )
    with lock_home(tmp_path):  # released on exit
        pass


def test_p2pico_node_refuses_a_home_another_node_serves(tmp_path: Path) -> None:
    home = tmp_path / "home"
    node = start_node(home)
    try:
        done = node_cli(home)
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"p2pico node: {home} is served by another node (pid {node.proc.pid}); stop it"
            " first, or give this one another --home\n"
        )
        with node.client() as client:  # the first node serves on, untouched
            assert client.get("/api/handled").status_code == 200
    finally:
        assert node.stop() == 0
    # once it stopped (the kernel dropped its lock), the home can be served again
    again = start_node(home)
    assert again.stop() == 0


def test_p2pico_node_on_a_damaged_block_store_says_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "blocks.sqlite").write_bytes(b"\x00garbage" * 1000)
    done = node_cli(home)
    assert done.returncode == 1
    assert done.stderr == (
        f"p2pico node: block store {home / 'blocks.sqlite'}: cannot open it: file is not a"
        " database\n"
    )
    assert "Traceback" not in done.stdout + done.stderr
