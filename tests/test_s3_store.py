"""The test S3 store (SeaweedFS) refuses a disk it would make read-only instead of hanging writes.

Below its free-space floor SeaweedFS marks every volume read-only and an S3 PUT waits for a writable
volume until the client times out: a CI run on a nearly full disk once spent 50 minutes that way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs.localcloud import servers


def test_a_disk_below_the_floor_is_refused_in_one_line(tmp_path: Path):
    free_mib = shutil.disk_usage(tmp_path).free >> 20
    with pytest.raises(RuntimeError) as refused:
        servers.require_free_space(tmp_path, free_mib + 1024)
    message = str(refused.value)
    assert "\n" not in message
    assert f"under {tmp_path}" in message and "free some disk space" in message


def test_s3_server_checks_the_floor_before_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(servers, "S3_MIN_FREE_MIB", (shutil.disk_usage(tmp_path).free >> 20) + 1024)
    with pytest.raises(RuntimeError, match="the S3 store needs"), servers.s3_server(tmp_path / "weed"):
        pass
    assert not (tmp_path / "weed" / "s3.json").exists()
