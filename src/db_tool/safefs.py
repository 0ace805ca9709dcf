"""File access inside directories another account controls (the server account owns data/).

As root we must never follow a link the server account planted there: a superuser session
can create `data/x -> /etc/shadow`, and a root write through it (or a read that is copied back
into data/) hands the target to that account. So: reads refuse symlinks and non-regular or
hard-linked files; writes go into a fresh temp file (O_EXCL|O_NOFOLLOW) given an explicit owner
and mode — independent of the caller's umask — and are renamed over the name, replacing a link
instead of writing through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from db_tool.errors import Error, suppress
from db_tool.proc import RunAs


def read_text(path: Path, owner: RunAs | None) -> str | None:
    """The text of the file at path, None when it does not exist. With an owner (we are root,
    the directory is that account's) never through a link, never a non-regular file."""
    if owner is None:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Error(f"cannot read {path}: {exc.strerror}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise Error(
                f"{path} is a symbolic link; db-tool does not follow links there: remove it "
                "(the server writes this file itself, or db-tool rewrites it)"
            ) from exc
        raise Error(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise Error(
                f"{path} is not a plain file (or has other hard links); db-tool does not read "
                "or rewrite it: remove it"
            )
        return fh.read().decode("utf-8", "replace")


def replace_file(path: Path, text: str, *, owner: RunAs | None, mode: int = 0o600) -> None:
    """Put text at path. With an owner (we are root): atomically, with that owner and mode,
    replacing a link instead of writing through it. Without (the server runs as us): in place,
    so a link the user made on purpose keeps working."""
    if owner is None:
        try:
            path.write_text(text)
        except OSError as exc:
            raise Error(f"cannot write {path}: {exc.strerror}") from exc
        return
    tmp = path.with_name(f".{path.name}.db-tool-{os.getpid()}.tmp")
    with suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
    except OSError as exc:
        raise Error(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), owner.uid, owner.gid)
            os.fchmod(fh.fileno(), mode)
            fh.write(text.encode("utf-8"))
        os.rename(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def private_dir(path: Path, *, owner: RunAs | None) -> list[str]:
    """Make path a directory only its owner can use (0700, owned by owner or us); create it if
    missing. Never follows a link. Returns what was changed on a directory that existed."""
    changed: list[str] = []
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise Error(f"cannot create {path}: {exc.strerror}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise Error(
            f"{path} is not a directory (or is a symbolic link): move it away so db-tool can "
            "create it"
        ) from exc
    try:
        st = os.fstat(fd)
        uid = owner.uid if owner is not None else os.geteuid()
        gid = owner.gid if owner is not None else st.st_gid
        if st.st_uid != uid:
            if os.geteuid() != 0:
                raise Error(
                    f"{path} belongs to uid {st.st_uid}, not to you: remove it so db-tool can "
                    "create its own"
                )
            os.fchown(fd, uid, gid)
            if not created:
                changed.append(f"changed the owner of {path} from uid {st.st_uid} to uid {uid}")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
            if not created:
                changed.append(
                    f"changed the mode of {path} from {stat.S_IMODE(st.st_mode):o} to 700"
                )
        for acl in ("system.posix_acl_access", "system.posix_acl_default"):
            if _has_xattr(fd, acl):
                # Named ACL entries would let others in past the mode bits: drop them.
                os.removexattr(fd, acl)
                if not created:
                    kind = "default ACL" if acl.endswith("default") else "ACL"
                    changed.append(f"removed the {kind} of {path}")
    finally:
        os.close(fd)
    return changed


def _has_xattr(fd: int, name: str) -> bool:
    try:
        return len(os.getxattr(fd, name)) > 0
    except OSError:
        return False
