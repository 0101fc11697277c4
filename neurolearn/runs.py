"""Run folders (DESIGN.md section 6): resolved recipe, metrics, weights, plots, checkpoints.

Every file is written atomically: to a temporary file in the same folder, flushed, then renamed over
the target with ``os.replace``, so an interrupted or diverging run never leaves a broken file and
the last good checkpoint stays readable. Weights and checkpoints are safetensors; the non-tensor
part of a checkpoint (epoch, metrics so far) is JSON beside it.

Trust (issue 11):

- ``RunLock(folder)``: one writer per run folder (``.neurolearn.lock``, O_CREAT|O_EXCL); a second is
  refused with ``RunFolderError`` naming the holder; a dead holder's lock is taken over with a warning.
- ``save_checkpoint_files`` / ``load_checkpoint_files``: a manifest records the SHA-256 (FIPS 180-4)
  of each checkpoint file; loading verifies it first and refuses (``CheckpointError``) a changed,
  truncated or missing file and any non-finite tensor. Saves are crash-consistent (write-ahead).
- ``check_writable(folder)``: an unwritable output folder is a ``RunFolderError`` before any work.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._validate import ParameterError
from .data.locate import sha256_file


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> None:
    """Save a dict of tensors as safetensors atomically (tensors made contiguous, on CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: str | Path) -> dict:
    """Load a safetensors file into a dict of CPU tensors."""
    return load_file(str(path))


# ---------------------------------------------------------------------------------------------- errors
class RunFolderError(RuntimeError):
    """A run folder that cannot be used: held by another writer, not writable, or inconsistent."""


class CheckpointError(RunFolderError):
    """A checkpoint that must not be resumed from: missing part, checksum mismatch, unreadable, non-finite."""


class RunFolderWarning(UserWarning):
    """A run folder fault that was repaired (a stale lock taken over)."""


# ---------------------------------------------------------------------------------------------- writable
def check_writable(folder: str | Path, label: str = "run folder") -> Path:
    """Raise ``RunFolderError`` unless files can be created in ``folder`` (or, when it does not exist
    yet, in its nearest existing ancestor, so that it can be made). Tried for real with a temporary file
    that is removed at once: permission bits, ACLs, read-only file systems and root all answer truly.
    Nothing is left behind and ``folder`` is not created. ``label`` names it in the message (``"--out"``)."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "" if probe == folder else f" (so {folder} cannot be created)"
        raise RunFolderError(f"{label} {folder}: {probe} exists and is not a folder{what}; give a folder path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".neurolearn-write-test.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "" if probe == folder else f" (it does not exist yet; its parent {probe} is not writable)"
        raise RunFolderError(f"{label} {folder}: cannot write there{where}: {exc.strerror or exc}; "
                             "choose a folder you can write to") from None
    return folder


# ---------------------------------------------------------------------------------------------- lock
#: the lock file's name inside a run folder (a folder holding only it counts as empty)
LOCK_NAME = ".neurolearn.lock"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from Linux ``/proc/<pid>/stat``
    (fields 3 and 22, proc(5)); ``None`` where /proc is absent or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _holder_alive(info: dict) -> bool | None:
    """Whether the lock's writer still runs: ``True``/``False`` on this host, ``None`` when it cannot be
    told (another host, or no pid). A zombie, or a live pid whose start time differs from the one
    recorded (the pid was reused), counts as gone."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    except OSError:
        return None
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X") or (info.get("proc_start") is not None and str(info["proc_start"]) != start):
            return False
    return True


def read_lock(folder: str | Path) -> dict | None:
    """The lock record of ``folder`` (pid, host, started, command, ...), ``None`` if it is not locked;
    ``{"damaged": text}`` when the lock file is empty or not JSON (a writer starting, or a damaged file)."""
    try:
        return _parse_lock((Path(folder) / LOCK_NAME).read_bytes())
    except FileNotFoundError:
        return None


def _parse_lock(raw: bytes) -> dict:
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    return info if isinstance(info, dict) else {"damaged": raw.decode("utf-8", "replace")[:200]}


def _describe(info: dict) -> str:
    if "damaged" in info:
        return f"a lock file that is empty or damaged ({info['damaged']!r}; a writer may be starting right now)"
    return (f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}, "
            f"command: {info.get('command')}")


class RunLock:
    """Exclusive writer lock of a run folder: the file ``<folder>/.neurolearn.lock`` created with
    ``O_CREAT | O_EXCL`` (atomic: exactly one creator succeeds, POSIX open(2)), holding the writer's
    pid, host, start time and command. Use as ``with RunLock(out): ...``; released on exit, also when the
    body raises. Folders that ``acquire`` had to create are removed again on release if still empty
    (a run refused at start leaves no empty ``--out`` behind).

    A second writer gets ``RunFolderError`` naming the holder. A STALE lock -- its host is this host and
    its pid no longer runs (or is a zombie, or was reused by a later process) -- is taken over with a
    ``RunFolderWarning`` naming the dead holder, so that resuming after a kill needs no manual step. A
    holder on another host, or a damaged lock file, cannot be checked: that is refused, and the message
    says which file to remove if no run is writing there."""

    def __init__(self, folder: str | Path, command: str | None = None):
        if command is not None and not isinstance(command, str):
            raise ParameterError(f"RunLock: command must be a string or None, got {command!r}")
        self.folder = Path(folder).expanduser()
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else shlex.join(sys.argv)
        self.info: dict | None = None
        self._made: list[Path] = []

    def _record(self) -> dict:
        stat = _proc_stat(os.getpid())
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": self.command, "proc_start": stat[1] if stat else None, "token": uuid.uuid4().hex}

    def _refuse(self, info: dict, alive: bool | None) -> RunFolderError:
        if alive is None and "damaged" not in info:
            hint = (f"its process cannot be checked from this host ({socket.gethostname()}); if no run is writing "
                    f"there, remove {self.path}")
        elif "damaged" in info:
            hint = f"if no run is writing there, remove {self.path}"
        else:
            hint = f"wait for it to finish or choose another folder (if that process is not writing there, remove {self.path})"
        return RunFolderError(f"run folder {self.folder} is in use by another writer: {_describe(info)}; {hint}")

    def _take_over(self, info: dict, seen: bytes) -> None:
        """Remove the stale lock ``seen``, unless another writer replaced it meanwhile."""
        grave = self.path.with_name(f"{LOCK_NAME}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if grave.read_bytes() != seen:  # a fresh lock of another writer: put it back
            with contextlib.suppress(FileExistsError):
                os.link(grave, self.path)
            os.unlink(grave)
            return
        os.unlink(grave)
        warnings.warn(f"run folder {self.folder}: took over the stale lock of {_describe(info)}: that process "
                      "no longer runs (killed or crashed)", RunFolderWarning, stacklevel=4)

    def acquire(self) -> RunLock:
        """Create the lock (and the folder if needed); ``RunFolderError`` if another writer holds it."""
        if self.info is not None:
            raise RunFolderError(f"run folder {self.folder}: this RunLock is already held")
        made, probe = [], self.folder
        while not probe.exists() and probe.parent != probe:
            made.append(probe)
            probe = probe.parent
        self._made = made
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return self._create()
        except OSError as exc:
            self._remove_made()
            raise RunFolderError(f"run folder {self.folder}: cannot create the lock file {self.path}: "
                                 f"{exc.strerror or exc}") from None
        except BaseException:
            self._remove_made()
            raise

    def _remove_made(self) -> None:
        """Remove the folders ``acquire`` created, innermost first, where they are still empty."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []

    def _create(self) -> RunLock:
        for attempt in range(3):
            record = self._record()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    seen = self.path.read_bytes()
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                info = _parse_lock(seen)
                alive = _holder_alive(info) if "damaged" not in info else None
                if alive is False and attempt < 2:
                    self._take_over(info, seen)
                    continue
                raise self._refuse(info, alive) from None
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                os.unlink(self.path)  # never leave an empty lock behind (disk full, interrupt)
                raise
            self.info = record
            return self
        raise RunFolderError(f"run folder {self.folder}: could not create {self.path} (other writers keep taking it)")

    def release(self) -> None:
        """Remove the lock if it is still this one's (idempotent)."""
        if self.info is None:
            return
        current = read_lock(self.folder)
        if current is not None and current.get("token") == self.info["token"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.info = None
        self._remove_made()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------- checkpoints
PENDING = ".pending"
MANIFEST_FORMAT = "neurolearn-checkpoint-manifest-1"


def checkpoint_names(stem: str = "checkpoint") -> tuple[str, str, str]:
    """File names of a checkpoint: tensors, JSON info, manifest (``checkpoint.safetensors``,
    ``checkpoint.json``, ``checkpoint.manifest.json`` for the default stem)."""
    if not isinstance(stem, str) or not stem or "/" in stem or stem.startswith("."):
        raise ParameterError(f"checkpoint: stem must be a plain file name stem, got {stem!r}")
    return f"{stem}.safetensors", f"{stem}.json", f"{stem}.manifest.json"


def _nonfinite(tensors: dict) -> list[str]:
    return [f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()} values)"
            for k, v in tensors.items() if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_exists(folder: str | Path, stem: str = "checkpoint") -> bool:
    """Whether ``folder`` holds any committed part of a checkpoint (tensors, info or manifest).
    Pending files alone (a first save killed before its manifest) are no checkpoint."""
    return any((Path(folder) / n).exists() for n in checkpoint_names(stem))


def save_checkpoint_files(folder: str | Path, tensors: dict, info: dict, stem: str = "checkpoint") -> dict:
    """Write a checkpoint: ``<stem>.safetensors`` (``tensors``), ``<stem>.json`` (``info``) and
    ``<stem>.manifest.json`` with the SHA-256 and size of each; returns the manifest.

    Crash-consistent (write-ahead): the two data files are first written in full as ``*.pending``
    (atomically, fsynced), then the manifest -- the commit point -- is replaced atomically, then the
    pending files are renamed over the old ones. A crash before the manifest leaves the previous
    checkpoint intact; a crash after it is rolled forward by ``load_checkpoint_files``.
    Non-finite floating tensors are refused (``CheckpointError``) before anything is written, so the
    last checkpoint on disk is always a finite one."""
    folder = Path(folder)
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in tensors.items()):
        raise ParameterError("save_checkpoint_files: tensors must be a non-empty dict of name -> tensor")
    if not isinstance(info, dict):
        raise ParameterError(f"save_checkpoint_files: info must be a dict, got {type(info).__name__}")
    try:
        info_text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"save_checkpoint_files: info must be JSON-serialisable: {exc}") from None
    bad = _nonfinite(tensors)
    if bad:
        raise CheckpointError(f"refusing to write a checkpoint with non-finite values into {folder}: {', '.join(bad)}; "
                              "the previous checkpoint (if any) is kept")
    t_name, i_name, m_name = checkpoint_names(stem)
    save_tensors(folder / (t_name + PENDING), tensors)
    write_text(folder / (i_name + PENDING), info_text)
    files = {n: {"sha256": sha256_file(folder / (n + PENDING)), "bytes": (folder / (n + PENDING)).stat().st_size}
             for n in (t_name, i_name)}
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    write_json(folder / m_name, manifest)
    for n in (t_name, i_name):
        os.replace(folder / (n + PENDING), folder / n)
    _fsync_dir(folder)
    return manifest


def _read_manifest(folder: Path, stem: str) -> dict:
    t_name, i_name, m_name = checkpoint_names(stem)
    path = folder / m_name
    if not path.exists():
        present = [n for n in (t_name, i_name) if (folder / n).exists()]
        raise CheckpointError(f"{path} is missing, so {' and '.join(str(folder / n) for n in present) or 'the checkpoint'} "
                              "cannot be verified (written by an older neurolearn, or the manifest was deleted); "
                              "refusing to resume from an unverified checkpoint")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        ok = manifest.get("format") == MANIFEST_FORMAT and set(files) == {t_name, i_name} and all(
            isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int) for e in files.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path} is damaged: expected a {MANIFEST_FORMAT} JSON manifest listing {t_name} and "
                              f"{i_name} with their sha256 and size")
    return files


def verify_checkpoint_files(folder: str | Path, stem: str = "checkpoint") -> dict:
    """Check every checkpoint file against the SHA-256 its manifest records; returns the manifest's
    file table. A file that does not match, but whose ``*.pending`` twin does (a save interrupted after
    its commit point), is rolled forward. ``CheckpointError`` names any file that is missing or does
    not match its recorded checksum."""
    folder = Path(folder)
    files = _read_manifest(folder, stem)
    rolled = False
    for name, entry in files.items():
        path, pending = folder / name, folder / (name + PENDING)
        found = sha256_file(path) if path.exists() else None
        if found == entry["sha256"]:
            continue
        if pending.exists() and sha256_file(pending) == entry["sha256"]:
            os.replace(pending, path)
            rolled = True
            continue
        if found is None:
            raise CheckpointError(f"{path} is missing (listed in {folder / checkpoint_names(stem)[2]})")
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} does not match its recorded checksum (sha256 recorded {entry['sha256'][:16]}..., "
            f"{entry['bytes']} bytes; found {found[:16]}..., {size} bytes{', truncated' if size < entry['bytes'] else ''}): "
            "it was changed or damaged after it was written; refusing to resume from it")
    if rolled:
        _fsync_dir(folder)
    for name in files:  # leftovers of a save killed before its commit point
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / (name + PENDING))
    return files


def load_checkpoint_files(folder: str | Path, stem: str = "checkpoint") -> tuple[dict, dict]:
    """``(tensors, info)`` of the checkpoint in ``folder``, verified first (``verify_checkpoint_files``),
    then parsed, then checked finite. Raises ``CheckpointError`` naming the file for a missing
    manifest or file, a checksum mismatch (garbage written over the weights, truncation), an unreadable
    file, or non-finite tensors (a NaN checkpoint is never "the last good checkpoint")."""
    folder = Path(folder)
    verify_checkpoint_files(folder, stem)
    t_name, i_name, _ = checkpoint_names(stem)
    try:
        tensors = load_tensors(folder / t_name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder / t_name}: not a readable safetensors file ({exc})") from None
    try:
        info = json.loads((folder / i_name).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / i_name}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{folder / i_name}: expected a JSON object, got {type(info).__name__}")
    bad = _nonfinite(tensors)
    if bad:
        raise CheckpointError(f"{folder / t_name} holds non-finite values: {', '.join(bad)}; it is not a usable checkpoint")
    return tensors, info
