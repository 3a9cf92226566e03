import pytest

from tests.s3 import s3_bucket

BUCKET = "seco-training"


@pytest.fixture(scope="module")
def s3_storage(tmp_path_factory):
    """s3://seco-training on a real SeaweedFS server: where the loader's reads from object storage are counted."""
    with s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET):
        yield f"s3://{BUCKET}"
