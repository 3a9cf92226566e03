"""A stage's event file in object storage: complete after its first record, every record after close."""

from __future__ import annotations

from jobs.common.tensorboard_events import EventLog, numeric_fields
from secoctl import store
from tests.tensorboard_events import scalars


def _downloaded(uri: str, folder):
    """The stored event files as `tensorboard --logdir` would read them after a sync."""
    folder.mkdir()
    for name in store.list_names(uri):
        (folder / name).write_bytes(store.read_bytes(store.join(uri, name)))
    return scalars(folder)


def test_the_stored_event_file_is_whole_from_the_first_record_and_complete_after_close(s3_storage, tmp_path):
    uri = store.join(s3_storage, "experiments/tb/pretrain/tensorboard")
    events = EventLog(uri)
    events.scalars(10, numeric_fields({"step": 10, "loss": 2.5, "lr": 0.125, "method": "seco", "finite": True}))
    assert _downloaded(uri, tmp_path / "first") == {"loss": [(10, 2.5)], "lr": [(10, 0.125)]}
    events.scalars(20, numeric_fields({"step": 20, "loss": 2.25, "lr": 0.125, "pos_cos": 0.5}))
    events.close()
    assert _downloaded(uri, tmp_path / "closed") == {
        "loss": [(10, 2.5), (20, 2.25)],
        "lr": [(10, 0.125), (20, 0.125)],
        "pos_cos": [(20, 0.5)],
    }


def test_a_resumed_run_hides_the_steps_logged_after_its_checkpoint(tmp_path):
    uri = (tmp_path / "tensorboard").as_uri()
    killed = EventLog(uri)
    for step in (10, 20, 30):
        killed.scalars(step, {"loss": float(step)})
    killed.close()  # a SIGKILL leaves at most this much: what the last upload held
    resumed = EventLog(uri, purge_step=21)  # resumed from the checkpoint at step 20
    for step in (30, 40):
        resumed.scalars(step, {"loss": step + 0.5})
    resumed.close()
    assert scalars(tmp_path / "tensorboard") == {"loss": [(10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5)]}
