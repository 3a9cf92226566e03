"""One storage resolution and one validation for every command: only file:///ABSOLUTE/PATH and
s3://BUCKET[/PREFIX] are storage; anything else is refused with exit 2 before anything is written."""

import pytest

from secoctl import store
from secoctl.errors import UserError
from tests.conftest import run_cli
from tests.test_spec import MINIMAL

REFUSED = {
    "s3://": "names no S3 bucket",
    "s3:///seco": "names no S3 bucket",
    "s3://B/seco": "names no S3 bucket",
    "s3://bucket//seco": "not a normalised prefix",
    "file:": "is not a URI",
    "file://": "not an absolute",
    "file:relative": "is not a URI",
    "memory://x": "memory:// is not supported",
    "http://host/tree": "http://",
    "github://a/b": "github:// is not supported",
    "gs://bucket/tree": "gs:// is not supported",
    "s3://bucket/seco?versionId=1": "no query or fragment",
    "s3://AKIA:abc@bucket/x": "credentials must not",
}


@pytest.mark.parametrize("uri", ["file:///data/seco", "s3://bucket", "s3://bucket/", "s3://my.bucket-1/a/b/"])
def test_an_absolute_file_path_and_an_s3_bucket_with_a_prefix_are_storage(uri):
    assert store.storage_problem(uri) is None


@pytest.mark.parametrize("uri", REFUSED)
def test_every_other_uri_is_refused_naming_why(uri):
    assert REFUSED[uri] in store.storage_problem(uri)


def test_the_precedence_is_spec_then_option_then_environment_then_the_embedded_default(monkeypatch):
    monkeypatch.setenv("SECOCTL_STORAGE", "s3://environment/seco")
    assert (
        store.resolve(None, "s3://own/seco")
        == store.resolve("s3://own/seco", "s3://own/seco")
        == ("s3://own/seco", "spec.storage")
    )
    assert store.resolve("s3://option/seco") == ("s3://option/seco", "--storage")
    assert store.resolve() == ("s3://environment/seco", "$SECOCTL_STORAGE")
    monkeypatch.delenv("SECOCTL_STORAGE")
    assert store.resolve() == (store.home_storage(), "the embedded default")
    with pytest.raises(UserError, match="differs from demo's spec.storage"):
        store.resolve("s3://option/seco", "s3://own/seco", "demo")
    monkeypatch.setenv("SECOCTL_STORAGE", "memory://x")
    with pytest.raises(UserError, match=r"^\$SECOCTL_STORAGE: 'memory://x': storage is file:///ABSOLUTE/PATH"):
        store.storage()


def test_every_command_refuses_a_bad_storage_from_any_source_and_writes_nothing(tmp_path):
    spec_file = tmp_path / "demo.yaml"
    spec_file.write_text(MINIMAL)
    work = tmp_path / "work"
    work.mkdir()
    runs = [
        (("apply", "--local", str(spec_file), "--storage", "s3://"), {}),
        (("apply", "--local", str(spec_file)), {"SECOCTL_STORAGE": "memory://x"}),
        (("weights", "push", str(spec_file), "--name", "w", "--version", "1", "--storage", "file:"), {}),
        (("weights", "push", str(spec_file), "--name", "w", "--version", "1"), {"SECOCTL_STORAGE": "file://"}),
        (("weights", "list", "--storage", "http://host/tree"), {}),
        (("weights", "pull", "w:1", "--storage", "github://a/b"), {}),
        (("status", "--local", "--storage", "s3://"), {}),
        (("logs", "demo", "--local"), {"SECOCTL_STORAGE": "memory://x"}),
        (("delete", "demo", "--local", "--storage", "file:relative"), {}),
    ]
    for args, environment in runs:
        result = run_cli(*args, cwd=work, environment=environment)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert list(work.iterdir()) == [], (args, "nothing may be written")
