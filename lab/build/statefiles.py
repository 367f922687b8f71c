"""Opening, writing and removing the files of a lab's state without trusting what is on disk.

`lab` runs as root, and its state lives in a directory others may be able to reach (a state root
set through `NSLAB_STATE_DIR`, or files planted by a careless script). So every state file is
opened with O_NOFOLLOW (a symbolic link is refused, never followed: root would otherwise create or
read whatever file it points at), files are created with O_EXCL, and a file or directory that is not
owned by root (or by the user running `lab`) or that group or others may write is refused with a
one-line error (exit 2) instead of being read, written or removed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

from lab.build.errors import LabError

AT_FDCWD = -100
RENAME_NOREPLACE = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
STATE_FILE_MODE = 0o644
STATE_DIRECTORY_MODE = 0o755
MAX_STATE_FILE_BYTES = 64 << 20  # a 1,000-node plan is a few MB; anything larger was not written by us


class UnsafeStateFile(LabError):
    """A state file or directory is a link, not owned by root, or writable by group or others (exit 2)."""


def trusted_owners() -> set[int]:
    """Who may own state files: root, and the user running `lab` (a state root of a test, say)."""
    return {0, os.geteuid()}


def check_trusted(st: os.stat_result, path: Path | str, what: str) -> None:
    """Refuse an object that someone other than root (or us) owns or that group/others may write."""
    if st.st_uid not in trusted_owners():
        raise UnsafeStateFile(f"{what} {path} is owned by uid {st.st_uid}, not by root; refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateFile(f"{what} {path} is writable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it")


def open_state_file(path: Path, flags: int, *, create: bool = False, exclusive: bool = False) -> int:
    """A descriptor on the regular file at `path`, never through a symbolic link.

    `create` makes the file when it is missing (O_EXCL first, so a file this call creates is
    known to be new); `exclusive` insists on making it. Raises FileNotFoundError when it is
    missing and not to be created, UnsafeStateFile when it is a link, not a regular file, or
    not trusted (see `check_trusted`).
    """
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if create or exclusive:
            try:
                return os.open(path, base | os.O_CREAT | os.O_EXCL, STATE_FILE_MODE)
            except FileExistsError:
                if exclusive:
                    raise
        fd = os.open(path, base)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeStateFile(f"state file {path} is a symbolic link; refusing to follow it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStateFile(f"state file {path} is not a regular file; refusing to use it")
        check_trusted(st, path, "state file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_state_bytes(path: Path, limit: int = MAX_STATE_FILE_BYTES) -> bytes | None:
    """The file's bytes (at most `limit`), or None when it does not exist."""
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit and (chunk := os.read(fd, min(1 << 20, limit - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_state_json(path: Path) -> Any | None:
    """The JSON in a state file; None when the file is missing or does not parse (torn by a crash)."""
    raw = read_state_bytes(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def write_json_atomic(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write via a fresh temporary file and rename, so a crash leaves the old or the new file, never half.

    The temporary file has a random name and is created with O_EXCL|O_NOFOLLOW: nothing planted
    beside `path` is ever written through. No indent by default: only then does the json module use
    its C encoder (a 100-node plan).
    """
    check_state_directory(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    text = json.dumps(data, indent=indent, sort_keys=True).encode()
    fd = open_state_file(tmp, os.O_WRONLY, exclusive=True)
    try:
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_state_directory(path: Path, what: str = "state directory") -> None:
    """A real directory (not a link to one) that root owns and only its owner may write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise LabError(f"{what} {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStateFile(f"{what} {path} is a symbolic link; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateFile(f"{what} {path} is not a directory; refusing to use it")
    check_trusted(st, path, what)


def remove_inside(directory: Path, path: str) -> bool:
    """Unlink `path` if it names an object strictly inside `directory`, walking no symbolic link.

    The path must be absolute and already normal (no `.`, `..` or doubled slashes); every
    directory on the way is opened with O_NOFOLLOW, so a link planted in the tree cannot lead
    outside. A link at the end is removed itself, never what it points at. False when `path` is
    outside `directory` or absent.
    """
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        return False
    try:
        relative = Path(path).relative_to(directory)
    except ValueError:
        return False
    parts = relative.parts
    if not parts or any(part in (".", "..") for part in parts):
        return False
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                return False
            os.close(fd)
            fd = inner
        try:
            if stat.S_ISDIR(os.lstat(parts[-1], dir_fd=fd).st_mode):
                return False
            os.unlink(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def rename_no_replace(source: Path, target: Path) -> bool:
    """Rename `source` to `target` unless `target` exists (renameat2 RENAME_NOREPLACE); False if it does.

    A plain rename would silently replace an empty directory at `target`.
    """
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is not None:
        if renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        if code not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a filesystem without the flag
            raise OSError(code, os.strerror(code), str(target))
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True
