"""A real S3 server (SeaweedFS on 127.0.0.1) with one bucket, its credentials in os.environ meanwhile.

Shared by the fixtures that need object storage: the weights client and the stage logs read it
the way pods do, through the AWS_* variables, so the environment is restored afterwards. fsspec
keeps one S3FileSystem per set of arguments for the whole process, holding the endpoint it was made
with: the cache is cleared on the way in and out, or a later server's tests reach a stopped one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from jobs.localcloud.servers import S3Endpoint, s3_server


@contextlib.contextmanager
def s3_bucket(folder: Path, bucket: str) -> Iterator[S3Endpoint]:
    with s3_server(folder) as endpoint:
        previous = {k: os.environ.get(k) for k in endpoint.environment()}
        os.environ.update(endpoint.environment())
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        try:
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
