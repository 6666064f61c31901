import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamrec.models.checkpoint import CheckpointError, list_checkpoints, load_latest, save_checkpoint
from streamrec.models.recommender import Recommender, RecommenderConfig, Sample
from tests.unit.test_recommender import SMALL, planted_stream

OFFSETS = {"streamrec.clicks": {0: 120, 1: 98}, "streamrec.purchases": {0: 40}}


def trained(steps=6):
    samples, _ = planted_stream(events=steps * 100, seed=9)
    model = Recommender(RecommenderConfig(**SMALL, replay_capacity=50, seed=4))
    for i in range(0, len(samples), 100):
        model.learn_many(samples[i : i + 100])
    return model, samples


def test_a_restored_model_scores_and_trains_exactly_like_the_original(tmp_path):
    model, samples = trained()
    path = save_checkpoint(model, tmp_path, OFFSETS)
    restored = load_latest(tmp_path)
    assert restored is not None and restored.path == path and restored.offsets == OFFSETS
    twin = restored.model
    assert (twin.version, twin.samples_trained, len(twin.users), len(twin.items)) == (6, 600, 40, 40)
    history = [s.item_id for s in samples[-5:]]
    assert torch.equal(twin.score_items("u1", history)[1], model.score_items("u1", history)[1])
    batch = [Sample("u1", "i3", (), 1.0, 700.0), Sample("new-user", "new-item", (), 3.0, 701.0)]
    assert twin.learn_many(batch) == model.learn_many(batch)  # same replay draw, negatives, updates
    assert torch.equal(twin.score_items("new-user", [])[1], model.score_items("new-user", [])[1])


def test_only_the_newest_checkpoints_are_kept_and_the_newest_is_loaded(tmp_path):
    model, samples = trained(steps=1)
    for i in range(5):
        model.learn_many(samples[:10])
        save_checkpoint(model, tmp_path, {"t": {0: i}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000000000006.pt", "checkpoint-000000000005.pt"]
    assert load_latest(tmp_path).offsets == {"t": {0: 4}}


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    model, samples = trained(steps=1)
    save_checkpoint(model, tmp_path, {"t": {0: 1}})
    model.learn_many(samples[:10])
    newest = save_checkpoint(model, tmp_path, {"t": {0: 2}})
    newest.write_bytes(newest.read_bytes()[:1000])  # torn by a disk error
    with caplog.at_level(logging.WARNING):
        restored = load_latest(tmp_path)
    assert restored.offsets == {"t": {0: 1}} and restored.model.version == 1
    assert "skipping unreadable checkpoint" in caplog.text


def test_an_unwritable_directory_is_a_clear_error_and_leaves_no_partial_file(tmp_path):
    model, _ = trained(steps=1)
    save_checkpoint(model, tmp_path / "ok", OFFSETS)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint to {blocked}"):
        save_checkpoint(model, blocked, OFFSETS)
    assert load_latest(tmp_path / "ok") is not None and load_latest(tmp_path / "missing") is None


def test_checkpoints_load_with_weights_only(tmp_path):
    model, _ = trained(steps=1)
    path = save_checkpoint(model, tmp_path, OFFSETS)
    payload = torch.load(path, weights_only=True)  # raises if anything but tensors and primitives
    assert payload["format"] == 1 and payload["offsets"] == OFFSETS


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays_loadable(tmp_path):
    """The write fails part-way (a file size limit stands in for a full disk, as EFBIG instead of
    ENOSPC): the error names the cause, no partial file is left, the last good checkpoint loads."""
    model, _ = trained(steps=1)
    good = save_checkpoint(model, tmp_path, OFFSETS)
    model.learn_many(planted_stream(events=100, seed=3)[0])
    # the disk fills half-way through a checkpoint the size of the last one
    child = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
import torch
from streamrec.models.checkpoint import CheckpointError, save_checkpoint
state = torch.load({str(tmp_path / "state.pt")!r}, weights_only=False)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, ({good.stat().st_size // 2}, resource.RLIM_INFINITY))
try:
    save_checkpoint(state, Path({str(tmp_path)!r}), {OFFSETS!r})
except CheckpointError as error:
    print(error)
"""
    torch.save(model.state_dict(), tmp_path / "state.pt")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cannot write checkpoint to {tmp_path}: File too large"
    (tmp_path / "state.pt").unlink()
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # no temp file left behind
    restored = load_latest(tmp_path)
    assert restored is not None and restored.path == good and restored.offsets == OFFSETS


def test_a_disk_that_fills_inside_torch_save_is_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """What torch does when the disk fills in the middle of its zip writer (seen on a full tmpfs under
    a live worker): part of the archive is written, then the ENOSPC is turned into a RuntimeError
    ("unexpected pos") raised while handling it. Still a CheckpointError naming the cause; no temp file."""
    model, _ = trained(steps=1)
    good = save_checkpoint(model, tmp_path, OFFSETS)

    def save_until_the_disk_is_full(payload, f) -> None:
        f.write(b"PK\x03\x04" + bytes(4096))  # the first records reached the disk
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 216960 vs 216912") from None

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(CheckpointError, match=f"^cannot write checkpoint to {tmp_path}: No space left on device$"):
        save_checkpoint(model, tmp_path, OFFSETS)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    assert load_latest(tmp_path).path == good
