"""plh.Publisher / plh.Subscriber / plh.broker against a real plh-broker and the tools."""
import os
import subprocess
import threading

import pytest

import plh


def test_broker_queries(broker_endpoint, name):
    b = plh.broker(broker_endpoint)
    assert isinstance(b.ping(), dict)
    with pytest.raises(plh.NotFound):
        b.info(name)
    with plh.Publisher(name, broker=broker_endpoint, schema="cam@1"):
        info = b.info(name)
        assert isinstance(info, dict) and name in str(info)
        assert name in str(b.list())
    with pytest.raises(plh.BrokerUnreachable) as e:
        plh.broker("tcp://127.0.0.1:1").ping()
    assert e.value.code == 5


def test_python_publisher_to_python_subscriber(broker_endpoint, name):
    pub = plh.Publisher(name, broker=broker_endpoint)
    got = []

    def consume():
        with plh.Subscriber(name, wait=True, broker=broker_endpoint, wait_timeout=10) as sub:
            got.extend(sub)

    t = threading.Thread(target=consume)
    t.start()
    pub.wait_subscribers(1, timeout=10)
    for i in range(500):
        assert pub.send(b"msg %d" % i) == i + 1
    pub.close()
    t.join(30)
    assert [m.data for m in got] == [b"msg %d" % i for i in range(500)]
    assert [m.seq for m in got] == list(range(1, 501))
    assert all(m.ts_ns > 0 and m.gaps == 0 for m in got)


def test_plh_pub_to_python_subscriber(broker_endpoint, name, bin_path):
    data = b"".join(b"line %d\n" % i for i in range(1000))
    pub = subprocess.Popen([bin_path("plh-pub"), name, "--broker", broker_endpoint, "-w", "1", "-W", "20s"],
                           stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    sub = plh.Subscriber(name, wait=True, broker=broker_endpoint, wait_timeout=10)
    got = []
    t = threading.Thread(target=lambda: got.extend(m.data for m in sub))
    t.start()  # consuming while plh-pub runs: it waits for the end to be confirmed
    _, err = pub.communicate(data, timeout=30)
    t.join(30)
    assert pub.returncode == 0, err
    assert got == [b"line %d" % i for i in range(1000)]
    assert sub.gaps == 0
    sub.close()


def test_python_publisher_to_plh_sub(broker_endpoint, name, bin_path):
    pub = plh.Publisher(name, broker=broker_endpoint)
    sub = subprocess.Popen([bin_path("plh-sub"), name, "--broker", broker_endpoint, "-W", "20s"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pub.wait_subscribers(1, timeout=10)
    for i in range(1000):
        pub.send(b"line %d" % i)
    pub.close()
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert out == b"".join(b"line %d\n" % i for i in range(1000))


def test_bad_input(broker_endpoint, name):
    with pytest.raises(plh.NotFound):
        plh.Subscriber(name, broker=broker_endpoint)
    with pytest.raises(plh.Timeout):
        plh.Subscriber(name, wait=True, broker=broker_endpoint, wait_timeout=0.2)
    with pytest.raises(plh.UsageError):
        plh.Publisher("bad channel!", broker=broker_endpoint)
    with pytest.raises(plh.UsageError):
        plh.Publisher(name, pattern="fanout", broker=broker_endpoint)
    with pytest.raises(plh.BrokerUnreachable):
        plh.Publisher(name, broker="tcp://127.0.0.1:1")
    p = plh.Publisher(name, broker=broker_endpoint)
    with pytest.raises(plh.Error):
        plh.Publisher(name, broker=broker_endpoint)  # the channel has a producer
    s = plh.Subscriber(name, broker=broker_endpoint)
    with pytest.raises(plh.Timeout):
        s.recv(timeout=0.1)
    p.close()
    with pytest.raises(plh.UsageError):
        p.send(b"x")  # closed
    s.close()
    with pytest.raises(plh.UsageError):
        s.recv()


def test_python_pipeline_publisher_to_plh_sub_workers(broker_endpoint, name, bin_path, tmp_path):
    pub = plh.Publisher(name, pattern="pipeline", broker=broker_endpoint)
    assert pub.send(b"job 0", timeout=0.1) == 1  # no worker: it waits inside for one
    with pytest.raises(plh.Timeout):
        pub.send(b"job 1", timeout=0.1)  # ... and the next send waits for room (not sent)
    # Output to files: a worker gets credit as its output is consumed (an unread pipe would
    # stop it; see plh-pub(1)).
    outs = [tmp_path / f"worker{i}.out" for i in range(2)]
    workers = []
    for o in outs:
        with open(o, "wb") as f:
            workers.append(subprocess.Popen([bin_path("plh-sub"), name, "--broker", broker_endpoint, "-W", "30s"],
                                            stdout=f, stderr=subprocess.PIPE))
    pub.wait_subscribers(2, timeout=10)
    for i in range(1, 1000):
        assert pub.send(b"job %d" % i, timeout=20) == i + 1
    pub.close()
    lines = []
    for w, o in zip(workers, outs):
        _, err = w.communicate(timeout=30)
        assert w.returncode == 0, err
        lines += o.read_bytes().splitlines()
    assert sorted(lines) == sorted(b"job %d" % i for i in range(1000))  # each exactly once


def test_plh_pub_pipeline_to_python_workers(broker_endpoint, name, bin_path):
    pub = subprocess.Popen([bin_path("plh-pub"), name, "--pattern", "pipeline", "--broker", broker_endpoint,
                            "-w", "2", "-W", "20s"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    got = [[], []]
    subs = [plh.Subscriber(name, wait=True, broker=broker_endpoint, wait_timeout=10) for _ in range(2)]
    threads = [threading.Thread(target=lambda i=i: got[i].extend(m.data for m in subs[i])) for i in range(2)]
    for t in threads:
        t.start()
    _, err = pub.communicate(b"".join(b"job %d\n" % i for i in range(1000)), timeout=30)
    for t in threads:
        t.join(30)
    assert pub.returncode == 0, err
    assert sorted(got[0] + got[1]) == sorted(b"job %d" % i for i in range(1000))
    for s in subs:
        s.close()


def test_curve_publisher_and_subscriber_with_the_tools(curve_broker, name, bin_path):
    ep = curve_broker
    pub = plh.Publisher(name, broker=ep)
    info = plh.broker(ep).info(name)
    assert isinstance(info.get("pubkey"), str) and len(info["pubkey"]) == 40  # the data plane is CURVE
    sub = subprocess.Popen([bin_path("plh-sub"), name, "--broker", ep, "-W", "20s"], env=dict(os.environ),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pub.wait_subscribers(1, timeout=10)
    for i in range(100):
        pub.send(b"secret %d" % i)
    pub.close()
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert out == b"".join(b"secret %d\n" % i for i in range(100))

    p2 = subprocess.Popen([bin_path("plh-pub"), name + "-2", "--broker", ep, "-w", "1", "-W", "20s"],
                          env=dict(os.environ), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    s2 = plh.Subscriber(name + "-2", wait=True, broker=ep, wait_timeout=10)
    got = []
    t = threading.Thread(target=lambda: got.extend(m.data for m in s2))
    t.start()
    _, err = p2.communicate(b"".join(b"line %d\n" % i for i in range(100)), timeout=30)
    t.join(30)
    assert p2.returncode == 0, err
    assert got == [b"line %d" % i for i in range(100)]
    s2.close()


def test_recv_iteration_and_recv_many_share_one_stream(broker_endpoint, name):
    pub = plh.Publisher(name, broker=broker_endpoint)
    sub = plh.Subscriber(name, broker=broker_endpoint)
    pub.wait_subscribers(1, timeout=10)
    big = bytes(range(256)) * (3 << 12)  # 3 MiB: larger than the receive buffer, which grows
    sent = [b"m%d" % i for i in range(100)] + [big] + [b"n%d" % i for i in range(50)]
    for d in sent:
        pub.send(d)
    closing = threading.Thread(target=pub.close)  # waits for this subscriber to take the end
    closing.start()
    got = []
    for m in sub:  # leaving the loop early loses nothing
        got.append(m.data)
        if len(got) == 10:
            break
    for _ in range(10):
        m = sub.recv(timeout=10)
        assert m.seq == len(got) + 1 and m.ts_ns > 0
        got.append(m.data)
    while True:
        batch = sub.recv_many(7, timeout=10)
        if not batch:
            break
        assert len(batch) <= 7
        got.extend(batch)
    closing.join(10)
    assert got == sent
    assert sub.ended and sub.recv() is None and sub.recv_many() == []
    with pytest.raises(plh.UsageError):
        sub.recv_many(0)
    sub.close()
