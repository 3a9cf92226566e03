"""Object storage that answers 500/503, resets connections and stalls: every write lands whole or not at
all, tries are bounded, and a reader never sees half an object. The store is the real SeaweedFS S3
server, behind the fault proxy; what landed is read back from the server itself, past the proxy."""

from __future__ import annotations

import http.client
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import s3fs

from jobs.localcloud.servers import fault_proxy, fault_report
from secoctl import store
from secoctl.errors import UserError
from tests.s3 import s3_bucket
from tests.storage_faults import s3_behind_faults, write_faults

BUCKET = "seco-faults"
LARGE = 2 * store.MULTIPART_CHUNK + 12345  # three parts


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def data_plane(monkeypatch):
    monkeypatch.setattr(store, "_timeouts", store.DATA_PLANE)


def upstream(endpoint):
    """The server itself, past any proxy."""
    return s3fs.S3FileSystem(
        skip_instance_cache=True, endpoint_url=endpoint.url, key=endpoint.access_key, secret=endpoint.secret_key
    )


def payload(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def test_the_proxy_forwards_s3_as_sent_signed_host_bodies_multipart_head_range_delete(s3, tmp_path: Path):
    small, large = payload(3000, 1), payload(LARGE, 2)
    (tmp_path / "large.bin").write_bytes(large)
    with s3_behind_faults(s3, []) as proxy:
        root = f"s3://{BUCKET}/faithful"
        store.write_bytes(store.join(root, "small"), small)
        store.upload_file(tmp_path / "large.bin", store.join(root, "large"))
        fs, path = store.filesystem(store.join(root, "large"))
        assert store.exists(store.join(root, "small"))  # HEAD
        assert fs.info(path)["size"] == LARGE
        assert (
            fs.cat_file(path, start=store.MULTIPART_CHUNK - 10, end=store.MULTIPART_CHUNK + 10)
            == large[store.MULTIPART_CHUNK - 10 : store.MULTIPART_CHUNK + 10]
        )  # Range
        assert store.read_bytes(store.join(root, "large")) == large
        assert store.list_names(root) == ["large", "small"]
        store.remove(store.join(root, "small"))  # DELETE
        assert not store.exists(store.join(root, "small"))
        assert fault_report(proxy)["requests"] > 0
    assert upstream(s3).cat_file(f"{BUCKET}/faithful/large") == large


def test_writes_and_reads_ride_out_bursts_of_faults_byte_for_byte(s3, tmp_path: Path, data_plane):
    small, large = payload(5000, 3), payload(LARGE, 4)
    (tmp_path / "large.bin").write_bytes(large)
    rules = [*write_faults("/bursts/"), {"path": "/bursts/", "method": "GET", "action": "cut", "times": 2}]
    with s3_behind_faults(s3, rules):
        root = f"s3://{BUCKET}/bursts"
        store.write_bytes(store.join(root, "small"), small)
        store.upload_file(tmp_path / "large.bin", store.join(root, "large"))
        assert store.read_bytes(store.join(root, "small")) == small  # its first two answers cut short
    assert upstream(s3).cat_file(f"{BUCKET}/bursts/small") == small
    assert upstream(s3).cat_file(f"{BUCKET}/bursts/large") == large


@pytest.mark.parametrize("timeouts", [store.CONTROL_PLANE, store.DATA_PLANE], ids=["control", "data"])
def test_tries_are_bounded_and_the_last_failure_is_one_line(s3, monkeypatch, timeouts):
    monkeypatch.setattr(store, "_timeouts", timeouts)
    root = f"s3://{BUCKET}/bounded-{timeouts.attempts}"
    with fault_proxy(
        s3.url, rules=[{"path": "/bounded", "method": "PUT", "action": "status", "status": 503, "times": 100}]
    ) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy)
        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(UserError) as failed, store.reported(root):
            store.write_bytes(store.join(root, "never"), b"x")
        tries = fault_report(proxy)["rules"][0]["fired"]
    s3fs.S3FileSystem.clear_instance_cache()
    assert tries == timeouts.attempts
    assert "\n" not in str(failed.value) and str(failed.value).startswith(f"storage {root}: ")
    assert not upstream(s3).exists(f"{BUCKET}/bounded-{timeouts.attempts}/never")


def test_a_stall_past_the_read_timeout_is_tried_again(s3, monkeypatch):
    monkeypatch.setattr(store, "_timeouts", store.Timeouts(connect_s=2, read_s=1, attempts=3, deadline_s=60))
    data = payload(2000, 5)
    with s3_behind_faults(s3, [{"path": "/stalled", "method": "PUT", "action": "stall", "seconds": 3}]):
        store.write_bytes(f"s3://{BUCKET}/stalled/object", data)
    assert upstream(s3).cat_file(f"{BUCKET}/stalled/object") == data


def test_a_reader_never_sees_a_multipart_upload_before_it_completes(s3, tmp_path: Path, data_plane):
    large = payload(LARGE, 6)
    (tmp_path / "large.bin").write_bytes(large)
    completing = {"path": r"/partial/object\?uploadId=", "method": "POST", "action": "stall", "seconds": 3}
    with s3_behind_faults(s3, [completing]) as proxy:
        writer = threading.Thread(
            target=store.upload_file, args=(tmp_path / "large.bin", f"s3://{BUCKET}/partial/object")
        )
        writer.start()
        while fault_report(proxy)["rules"][0]["fired"] == 0 and writer.is_alive():
            writer.join(0.05)
        # every part is uploaded and the completion is held: nothing of the object is visible yet
        assert not upstream(s3).exists(f"{BUCKET}/partial/object")
        writer.join()
    assert upstream(s3).cat_file(f"{BUCKET}/partial/object") == large


def test_the_proxy_passes_a_chunked_body_whole_and_the_host_the_client_named():
    """What an upstream receives through the proxy: the client's Host (signed by SigV4), the body de-chunked."""
    received = {}

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - http.server's name
            received.update(host=self.headers["Host"], body=self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    upstream_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream_server.serve_forever, daemon=True).start()
    try:
        with fault_proxy(f"http://127.0.0.1:{upstream_server.server_port}") as proxy:
            connection = http.client.HTTPConnection(proxy.removeprefix("http://"), timeout=30)
            connection.putrequest("PUT", "/bucket/key", skip_host=True)
            connection.putheader("Host", "bucket.s3.example:9000")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for chunk in (b"first,", b"second,", b"third"):
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
            assert connection.getresponse().status == 200
            connection.close()
    finally:
        upstream_server.shutdown()
    assert received == {"host": "bucket.s3.example:9000", "body": b"first,second,third"}
