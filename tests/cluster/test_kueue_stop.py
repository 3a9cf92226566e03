"""Kueue shares the session's control plane with tests that do not use it: once stopped, it refuses nothing."""

from __future__ import annotations

import json

import pytest

from jobs.localcloud.cluster.kueue import Kueue
from tests.cluster.conftest import NAMESPACE


@pytest.fixture(scope="module")
def stopped_kueue(cluster, tmp_path_factory) -> Kueue:
    """Module-scoped, so it finds the cached Kueue before the test's HOME is isolated."""
    controller = Kueue(cluster, tmp_path_factory.mktemp("kueue")).start()
    controller.stop()
    return controller


def test_a_stopped_kueue_leaves_no_webhook_behind_to_refuse_jobs(cluster, stopped_kueue):
    assert stopped_kueue.webhooks
    left = [
        c["metadata"]["name"]
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
        for c in json.loads(cluster.kubectl("get", kind, "-o", "json").stdout)["items"]
    ]
    assert not [name for name in left if name.startswith("kueue-")]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "after-kueue", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.example/x:1"}]}
            }
        },
    }
    created = cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(job), check=False)
    assert created.returncode == 0, created.stderr
