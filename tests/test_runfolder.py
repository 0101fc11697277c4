"""Run folders: the writer lock, verified checkpoints (manifest of SHA-256), writability checks."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from neurolearn import runs
from neurolearn.runs import (
    LOCK_NAME,
    CheckpointError,
    RunFolderError,
    RunFolderWarning,
    RunLock,
    check_writable,
    checkpoint_exists,
    load_checkpoint_files,
    load_tensors,
    read_lock,
    save_checkpoint_files,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ lock
def test_second_writer_is_refused_naming_the_holder_then_acquires_after_release(tmp_path):
    first = RunLock(tmp_path / "run", command="neurolearn run a.toml").acquire()
    info = read_lock(tmp_path / "run")
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "neurolearn run a.toml"
    with pytest.raises(RunFolderError, match=rf"in use by another writer: pid {os.getpid()} on host .*started .*neurolearn run a\.toml"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    assert read_lock(tmp_path / "run") is None
    with RunLock(tmp_path / "run") as second:
        assert read_lock(tmp_path / "run")["token"] == second.info["token"]
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_folders_made_for_the_lock_are_removed_when_left_empty(tmp_path):
    out = tmp_path / "a" / "run"
    with RunLock(out):
        assert out.is_dir()
    assert not (tmp_path / "a").exists()  # nothing was written: nothing is left
    with RunLock(out):
        (out / "metrics.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # a used folder stays
    with RunLock(tmp_path / "b") as held:
        with pytest.raises(RunFolderError):
            RunLock(tmp_path / "b").acquire()  # refused: the holder's folder is untouched
        assert (tmp_path / "b" / LOCK_NAME).exists() and held.info


def test_lock_released_when_the_body_raises(tmp_path):
    with pytest.raises(ZeroDivisionError), RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
        1 / 0  # noqa: B018
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock(tmp_path).acquire().release()


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding the lock of ``folder`` until its stdin closes."""
    code = ("import sys; from neurolearn.runs import RunLock\n"
            f"with RunLock({str(folder)!r}, command='holder'):\n    print('held', flush=True); sys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_live_holder_in_another_process_is_refused_and_released_on_its_exit(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunFolderError, match=rf"pid {proc.pid} on host .*command: holder; wait for it"):
            RunLock(tmp_path).acquire()
    finally:
        proc.stdin.close()
        proc.wait()
    assert read_lock(tmp_path) is None  # the holder removed its lock on a clean exit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunLock(tmp_path).acquire().release()


def test_lock_of_a_killed_writer_is_taken_over_with_a_warning(tmp_path):
    proc = _holder(tmp_path)
    proc.kill()  # SIGKILL: no cleanup runs, the lock file stays
    proc.wait()
    assert read_lock(tmp_path)["pid"] == proc.pid
    with pytest.warns(RunFolderWarning, match=rf"took over the stale lock of pid {proc.pid} .*no longer runs"):
        lock = RunLock(tmp_path).acquire()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    lock.release()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="pid reuse is detected through /proc")
def test_reused_pid_counts_as_stale_but_the_same_process_does_not(tmp_path):
    record = RunLock(tmp_path)._record()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(record, proc_start="1")))  # our pid, another start time
    with pytest.warns(RunFolderWarning, match="stale lock"):
        RunLock(tmp_path).acquire().release()
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))  # our pid and start time: held by this process
    with pytest.raises(RunFolderError, match="in use by another writer"):
        RunLock(tmp_path).acquire()


def test_holder_on_another_host_or_damaged_lock_is_refused_with_how_to_remove(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "started": "2026-01-01T00:00:00+00:00", "command": "x"}))
    with pytest.raises(RunFolderError, match=rf"pid 1 on host elsewhere\.invalid.*cannot be checked from this host.*remove {path}"):
        RunLock(tmp_path).acquire()
    path.write_text("")
    with pytest.raises(RunFolderError, match=rf"empty or damaged.*remove {path}"):
        RunLock(tmp_path).acquire()
    path.unlink()
    RunLock(tmp_path).acquire().release()


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path):
    lock = RunLock(tmp_path).acquire()
    other = dict(read_lock(tmp_path), token="someone-else")
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    lock.release()
    assert read_lock(tmp_path)["token"] == "someone-else"


def test_lock_where_no_folder_can_be_made_is_a_run_folder_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"f/run: cannot create the lock file"):
        RunLock(tmp_path / "f" / "run").acquire()
    assert (tmp_path / "f").read_text() == "x"


def test_lock_rejects_bad_command():
    with pytest.raises(ValueError, match="command must be a string"):
        RunLock("x", command=3)


# ------------------------------------------------------------------ checkpoints
def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"net.w": torch.randn(6, 5, generator=g), "net.b": torch.randn(5, generator=g),
            "generator": torch.arange(8, dtype=torch.uint8)}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_and_manifest(tmp_path):
    assert not checkpoint_exists(tmp_path)
    manifest = save_checkpoint_files(tmp_path, _tensors(), {"epoch": 3, "history": [{"loss": 0.5}]})
    assert checkpoint_exists(tmp_path)
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert json.loads((tmp_path / "checkpoint.manifest.json").read_text()) == manifest
    tensors, info = load_checkpoint_files(tmp_path)
    assert _equal(tensors, _tensors()) and info == {"epoch": 3, "history": [{"loss": 0.5}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.manifest.json", "checkpoint.safetensors"]


def test_finite_garbage_over_the_weights_is_refused(tmp_path):
    save_checkpoint_files(tmp_path, _tensors(0), {"epoch": 1})
    save_file(_tensors(1), str(tmp_path / "checkpoint.safetensors"))  # valid safetensors, other weights
    assert _equal(load_tensors(tmp_path / "checkpoint.safetensors"), _tensors(1))  # unverified load takes it
    with pytest.raises(CheckpointError, match=r"checkpoint\.safetensors does not match its recorded checksum"):
        load_checkpoint_files(tmp_path)


def test_edited_info_is_refused(tmp_path):
    save_checkpoint_files(tmp_path, _tensors(), {"epoch": 1})
    (tmp_path / "checkpoint.json").write_text('{"epoch": 5}\n')
    with pytest.raises(CheckpointError, match=r"checkpoint\.json does not match its recorded checksum"):
        load_checkpoint_files(tmp_path)


def test_truncated_checkpoint_is_a_checkpoint_error_not_a_safetensor_error(tmp_path):
    save_checkpoint_files(tmp_path, _tensors(), {"epoch": 1})
    p = tmp_path / "checkpoint.safetensors"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"checkpoint\.safetensors does not match its recorded checksum .*truncated"):
        load_checkpoint_files(tmp_path)


def test_missing_or_damaged_manifest_or_file_is_refused(tmp_path):
    save_checkpoint_files(tmp_path, _tensors(), {"epoch": 1})
    m = tmp_path / "checkpoint.manifest.json"
    text = m.read_text()
    m.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint\.manifest\.json is damaged"):
        load_checkpoint_files(tmp_path)
    m.unlink()
    assert checkpoint_exists(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.manifest\.json is missing, so .*checkpoint\.safetensors .*cannot be verified"):
        load_checkpoint_files(tmp_path)
    m.write_text(text)
    (tmp_path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is missing"):
        load_checkpoint_files(tmp_path)


def test_nan_checkpoint_is_never_written_and_the_last_good_one_stays(tmp_path):
    save_checkpoint_files(tmp_path, _tensors(0), {"epoch": 1})
    bad = _tensors(1)
    bad["net.w"][2, 3] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite values .*net\.w \(1 of 30 values\).*previous checkpoint .* is kept"):
        save_checkpoint_files(tmp_path, bad, {"epoch": 2})
    tensors, info = load_checkpoint_files(tmp_path)
    assert _equal(tensors, _tensors(0)) and info == {"epoch": 1}


def test_nan_checkpoint_with_a_matching_manifest_is_refused_on_load(tmp_path, monkeypatch):
    bad = _tensors()
    bad["net.b"][:] = float("nan")
    monkeypatch.setattr(runs, "_nonfinite", lambda t: [])  # a writer without the check (e.g. an older version)
    save_checkpoint_files(tmp_path, bad, {"epoch": 2})
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"checkpoint\.safetensors holds non-finite values: net\.b \(5 of 5"):
        load_checkpoint_files(tmp_path)


def _interrupted(tmp_path: Path, committed: bool) -> Path:
    """A folder with checkpoint A whose save of B was killed before (or after) B's manifest was written."""
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint_files(a, _tensors(0), {"epoch": 1})
    save_checkpoint_files(b, _tensors(1), {"epoch": 2})
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        shutil.copy(b / name, a / (name + ".pending"))
    if committed:
        shutil.copy(b / "checkpoint.manifest.json", a / "checkpoint.manifest.json")
    return a


def test_save_killed_before_its_manifest_keeps_the_previous_checkpoint(tmp_path):
    folder = _interrupted(tmp_path, committed=False)
    tensors, info = load_checkpoint_files(folder)
    assert _equal(tensors, _tensors(0)) and info == {"epoch": 1}
    assert not list(folder.glob("*.pending"))


def test_save_killed_after_its_manifest_is_rolled_forward(tmp_path):
    folder = _interrupted(tmp_path, committed=True)
    tensors, info = load_checkpoint_files(folder)
    assert _equal(tensors, _tensors(1)) and info == {"epoch": 2}
    assert not list(folder.glob("*.pending"))


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="tensors must be a non-empty dict"):
        save_checkpoint_files(tmp_path, {}, {})
    with pytest.raises(ValueError, match="info must be JSON-serialisable"):
        save_checkpoint_files(tmp_path, _tensors(), {"x": object()})
    assert not checkpoint_exists(tmp_path) and not list(tmp_path.iterdir())


def test_existing_writers_still_work(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    runs.save_tensors(tmp_path / "w.safetensors", _tensors(), {"k": 1})
    assert _equal(load_tensors(tmp_path / "w.safetensors"), _tensors())


# ------------------------------------------------------------------ writable
def test_writable_folder_passes_and_nothing_is_created(tmp_path):
    assert check_writable(tmp_path) == tmp_path
    assert check_writable(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())


def test_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"--out .*f: .*f exists and is not a folder"):
        check_writable(tmp_path / "f", label="--out")
    with pytest.raises(RunFolderError, match=r"f exists and is not a folder \(so .*f/run cannot be created\)"):
        check_writable(tmp_path / "f" / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match=r"--out .*ro: cannot write there: Permission denied"):
            check_writable(ro, label="--out")
        with pytest.raises(RunFolderError, match=r"does not exist yet; its parent .*ro is not writable"):
            check_writable(ro / "run")
    finally:
        ro.chmod(0o700)
    assert check_writable(ro / "run") == ro / "run"
