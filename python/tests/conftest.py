"""Fixtures: a real plh-broker on an ephemeral port, unique segment/channel names, and the
tool binaries (PLH_BIN_DIR, set by ctest; else build/bin next to this tree)."""
import json
import os
import select
import subprocess
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("PLH_BIN_DIR") or os.path.join(HERE, "..", "..", "build", "bin")


def tool(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not built")
    return path


@pytest.fixture
def bin_path():
    return tool


@pytest.fixture
def name():
    """A fresh segment/channel name; its segment is removed afterwards."""
    n = "py-" + uuid.uuid4().hex[:12]
    yield n
    try:
        os.unlink("/dev/shm/plh." + n)
    except FileNotFoundError:
        pass


@pytest.fixture
def broker_endpoint():
    proc = subprocess.Popen([tool("plh-broker"), "--endpoint", "tcp://127.0.0.1:0", "-q"], stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "plh-broker printed no ready line within 10 s"
        line = proc.stdout.readline()
        yield json.loads(line)["endpoint"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def curve_broker(tmp_path, monkeypatch):
    """A plh-broker with a CURVE key (plh-ctl keygen); PLH_BROKER_KEY is set for the test."""
    subprocess.run([tool("plh-ctl"), "keygen", "--out", str(tmp_path / "broker")], check=True,
                   capture_output=True, timeout=30)
    proc = subprocess.Popen([tool("plh-broker"), "--endpoint", "tcp://127.0.0.1:0", "-q",
                             "--curve-secret-file", str(tmp_path / "broker.key")], stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "plh-broker printed no ready line within 10 s"
        ep = json.loads(proc.stdout.readline())["endpoint"]
        monkeypatch.setenv("PLH_BROKER_KEY", "@" + str(tmp_path / "broker.pub"))
        yield ep
    finally:
        proc.terminate()
        proc.wait(10)
