"""plh.Requester / plh.Replier against a real plh-broker, plh-req and plh-rep."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import plh

HERE = os.path.dirname(os.path.abspath(__file__))


def serving(rep: plh.Replier, count=None) -> threading.Thread:
    t = threading.Thread(target=rep.serve, args=(count,), daemon=True)
    t.start()
    return t


def test_python_requester_to_plh_rep(broker_endpoint, name, bin_path):
    rep = subprocess.Popen([bin_path("plh-rep"), name, "--broker", broker_endpoint, "--", "tr", "a-z", "A-Z"],
                           stderr=subprocess.PIPE)
    bad = subprocess.Popen([bin_path("plh-rep"), name + "-bad", "--broker", broker_endpoint, "--",
                            "sh", "-c", "echo oops >&2; exit 3"], stderr=subprocess.PIPE)
    try:
        with plh.Requester(name, broker=broker_endpoint, wait=True) as r:
            assert r.request(b"abc", timeout=20) == b"ABC"
            assert r.request("str too", timeout=20) == b"STR TOO"
            blob = bytes(range(97, 123)) * 40000  # ~1 MB
            assert r.request(blob, timeout=20) == blob.upper()
        with plh.Requester(name + "-bad", broker=broker_endpoint, wait=True) as r:
            with pytest.raises(plh.RequestFailed) as e:
                r.request(b"x", timeout=20)
            assert e.value.status == 3 and "oops" in str(e.value) and e.value.code == 1
    finally:
        for p in (rep, bad):
            p.terminate()
            p.wait(10)


def test_plh_req_to_python_replier(broker_endpoint, name, bin_path):
    def handler(body: bytes) -> bytes:
        if body == b"boom":
            raise ValueError("nope")
        return body[::-1]

    with plh.Replier(name, handler, broker=broker_endpoint) as rep:
        t = serving(rep, 2)
        out = subprocess.run([bin_path("plh-req"), name, "--broker", broker_endpoint, "-W", "20s", "abc"],
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout == b"cba\n"
        out = subprocess.run([bin_path("plh-req"), name, "--broker", broker_endpoint, "-W", "20s", "boom"],
                             capture_output=True, timeout=30)
        assert out.returncode == 1
        assert b"ValueError: nope" in out.stderr
        t.join(10)
        assert not t.is_alive()
        assert rep.served == 1 and rep.errors == 1


def test_python_requester_to_python_replier_direct():
    def handler(body: bytes):
        if body == b"notfound":
            raise plh.NotFound("no such thing")
        if body == b"int":
            return 42
        return None if body == b"" else "é:" + body.decode()

    with plh.Replier(None, handler) as rep:
        assert rep.endpoint.startswith("tcp://127.0.0.1:")
        t = serving(rep)
        with plh.Requester(rep.endpoint) as r:
            assert r.request(b"hi", timeout=10) == "é:hi".encode()
            assert r.request(b"", timeout=10) == b""
            with pytest.raises(plh.RequestFailed) as e:
                r.request(b"notfound", timeout=10)
            assert e.value.status == 4 and "NotFound: no such thing" in str(e.value)
            with pytest.raises(plh.RequestFailed) as e:
                r.request(b"int", timeout=10)
            assert e.value.status == 1 and "returned int" in str(e.value)
            assert r.request(b"again", timeout=10) == "é:again".encode()  # serving goes on
        rep.stop()
        t.join(5)
        assert not t.is_alive()


def test_timeouts_release_the_gil(broker_endpoint, name):
    rep = plh.Replier(name, lambda b: b, broker=broker_endpoint)  # never served
    r = plh.Requester(name, broker=broker_endpoint)
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        t0, n0 = time.monotonic(), ticks[0]
        time.sleep(0.2)
        rate = (ticks[0] - n0) / (time.monotonic() - t0)
        before = ticks[0]
        start = time.monotonic()
        with pytest.raises(plh.Timeout):
            r.request(b"x", timeout=0.5)
        took = time.monotonic() - start
        during = ticks[0] - before
    finally:
        stop.set()
        t.join()
    assert 0.45 < took < 3
    assert during > 0.3 * rate * 0.5, f"the other thread ran {during} loops during a 0.5 s request ({rate:.0f}/s free)"
    # the abandoned request is answered now; its late reply is not taken for the next one
    assert rep.serve_one(timeout=5)
    t = threading.Thread(target=rep.serve_one, args=(10,))
    t.start()
    assert r.request(b"second", timeout=10) == b"second"
    t.join()
    r.close()
    rep.close()


def test_not_found_and_bad_input(broker_endpoint, name):
    with pytest.raises(plh.NotFound):
        plh.Requester(name, broker=broker_endpoint)
    with plh.Requester(name, broker=broker_endpoint, wait=True) as r:
        with pytest.raises(plh.Timeout):
            r.request(b"x", timeout=0.3)
    with pytest.raises(plh.UsageError):
        plh.Requester("bad service!", broker=broker_endpoint)
    with pytest.raises(plh.UsageError):
        plh.Replier(name, "not callable", broker=broker_endpoint)
    with pytest.raises(plh.UsageError):
        plh.Replier(name, lambda b: b, broker=broker_endpoint, concurrency=0)
    with pytest.raises(plh.BrokerUnreachable):
        plh.Replier(name, lambda b: b, broker="tcp://127.0.0.1:1")
    rep = plh.Replier(None, lambda b: b)
    r = plh.Requester(rep.endpoint)
    r.close()
    rep.close()
    with pytest.raises(plh.UsageError):
        r.request(b"x")
    with pytest.raises(plh.UsageError):
        rep.serve_one(0)
    r.close()  # twice: fine


@pytest.mark.parametrize("wait", ["r.request(b'x')", "rep.serve()"])
def test_waits_are_interruptible_by_ctrl_c(wait):
    code = (
        "import sys, plh\n"
        "rep = plh.Replier(None, lambda b: b)\n"
        "r = plh.Requester(rep.endpoint)\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        f"    {wait}\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.readline() == b"ready\n"
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert out == b"interrupted\n", err
    assert time.monotonic() - start < 2


def test_curve_requester_and_replier_with_the_tools(curve_broker, name, bin_path):
    ep = curve_broker
    env = dict(os.environ)  # with PLH_BROKER_KEY
    rep = subprocess.Popen([bin_path("plh-rep"), name, "--broker", ep, "--", "cat"], env=env, stderr=subprocess.PIPE)
    try:
        with plh.Requester(name, broker=ep, wait=True) as r:
            assert r.request(b"classified", timeout=20) == b"classified"
    finally:
        rep.terminate()
        rep.wait(10)
    with plh.Replier(name + "-py", lambda b: b"secret " + b, broker=ep) as rp:
        info = [c for c in plh.broker(ep).list()["channels"] if c["channel"].startswith(name + "-py.")]
        assert info and isinstance(info[0].get("pubkey"), str) and len(info[0]["pubkey"]) == 40
        t = serving(rp, 1)
        out = subprocess.run([bin_path("plh-req"), name + "-py", "--broker", ep, "-W", "20s", "x"], env=env,
                             capture_output=True, timeout=30)
        t.join(10)
        assert out.returncode == 0, out.stderr
        assert out.stdout == b"secret x\n"
