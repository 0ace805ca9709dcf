"""Running as root: PostgreSQL refuses uid 0, so the server runs as PG_OS_USER.

What we change, and nothing else:
- the directories the tool creates for the server (`data`, `sock`, a created PG_LOG_PATH)
  are owned by PG_OS_USER;
- each ancestor of the working dir that PG_OS_USER cannot enter gets *search* (x) permission
  for that one user through a POSIX ACL (`setfacl -n -m u:USER:x DIR`: the mask is not
  recalculated, so no other entry gains anything; where the mask withholds x it is widened by
  x alone and whoever gains from that is named); only where setfacl is missing or the
  filesystem has no ACLs do we fall back to `chmod o+x DIR`. Each change is reported on stderr.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import struct
from pathlib import Path

from db_tool import output, proc
from db_tool.errors import Error, ExitCode
from db_tool.proc import RunAs

DEFAULT_OS_USERS = ("postgres", "nobody")


def server_account(requested: str | None) -> RunAs | None:
    """The account to run server binaries as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    names = [requested] if requested else list(DEFAULT_OS_USERS)
    for name in names:
        try:
            entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise Error(
                f"PG_OS_USER={name} is root; PostgreSQL refuses to run as root: "
                "set PG_OS_USER to an unprivileged account",
                ExitCode.MISSING,
            )
        return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir or "/")
    if requested:
        raise Error(
            f"PG_OS_USER={requested} does not exist: create it (useradd --system {requested}) "
            "or set PG_OS_USER to an existing unprivileged account",
            ExitCode.MISSING,
        )
    raise Error(
        "running as root, and neither a 'postgres' nor a 'nobody' account exists to run "
        "PostgreSQL: create one (useradd --system postgres) or set PG_OS_USER",
        ExitCode.MISSING,
    )


def _groups_of(account: RunAs) -> frozenset[int]:
    """The account's groups (getgrall reads all of /etc/group: once per run and account).
    (A dict, not functools.cache: functools and collections are not loaded on the hook
    paths.)"""
    groups = _groups_seen.get(account)
    if groups is None:
        found = {account.gid}
        for g in grp.getgrall():
            if account.name in g.gr_mem:
                found.add(g.gr_gid)
        groups = _groups_seen[account] = frozenset(found)
    return groups


_groups_seen: dict[RunAs, frozenset[int]] = {}


_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK = 0x02, 0x04, 0x08, 0x10


def _acl_entries(path: Path) -> list[tuple[int, int, int]]:
    """(tag, perm, id) of each entry of path's POSIX access ACL; [] when it has none."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return []
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]


def _acl_grants(path: Path, uid: int, bits: int) -> bool:
    """Does the POSIX ACL of path give uid these bits (through a named-user entry)?"""
    entries = _acl_entries(path)
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 7)
    return any(
        tag == _ACL_USER and ident == uid and (perm & mask) & bits == bits
        for tag, perm, ident in entries
    )


def _rwx(bits: int) -> str:
    return "".join(c if bits & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))


def _entry_name(tag: int, ident: int) -> str:
    if tag == _ACL_USER:
        try:
            return f"user {pwd.getpwuid(ident).pw_name}"
        except KeyError:
            return f"uid {ident}"
    if tag == _ACL_GROUP:
        try:
            return f"group {grp.getgrgid(ident).gr_name}"
        except KeyError:
            return f"gid {ident}"
    return "the owning group"


def _can(
    account: RunAs, st: os.stat_result, groups: frozenset[int], bits: int, path: Path | None = None
) -> bool:
    """bits: combination of 4 (r), 2 (w), 1 (x) — checked against owner/ACL/group/other."""
    mode = st.st_mode
    if st.st_uid != account.uid and path is not None and _acl_grants(path, account.uid, bits):
        return True
    if st.st_uid == account.uid:
        return (mode >> 6) & bits == bits
    if st.st_gid in groups:
        return (mode >> 3) & bits == bits
    return mode & bits == bits


def can_write(path: Path, st: os.stat_result, account: RunAs) -> bool:
    """May account create files in the directory path (w and x)?"""
    return _can(account, st, _groups_of(account), 3, path)


def grant_search(path: Path, account: RunAs) -> list[str]:
    """Make every ancestor of `path` (inclusive) enterable by `account`; return what changed."""
    changed: list[str] = []
    groups = _groups_of(account)
    current = Path(path.anchor)
    for part in path.absolute().parts[1:]:
        current = current / part
        try:
            st = current.stat()
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(st.st_mode) or _can(account, st, groups, 1, current):
            continue
        changed.append(_grant(current, account, "x"))
    return changed


def grant_write(path: Path, account: RunAs) -> str | None:
    st = path.stat()
    if _can(account, st, _groups_of(account), 3, path):
        return None
    return _grant(path, account, "rwx")


def _grant(directory: Path, account: RunAs, perms: str) -> str:
    """Add one named-user ACL entry without recalculating the mask (`setfacl -n`): a
    recalculated mask would silently make other entries effective (a `user:x:rwx` held back
    by `mask::r-x` would become writable). Where the mask withholds our bits, it is widened by
    exactly those bits, and whoever gains from that is named."""
    setfacl = proc.which("setfacl")
    if setfacl:
        result = proc.run(
            [setfacl, "-n", "-m", f"u:{account.name}:{perms}", str(directory)], check=False
        )
        if result.ok:
            msg = f"granted {perms} on {directory} to user {account.name} (ACL)"
            output.info(msg)
            want = {"x": 1, "rwx": 7}[perms]
            if not _acl_grants(directory, account.uid, want):
                _widen_mask(setfacl, directory, account, want)
            return msg
    mode = directory.stat().st_mode
    add = stat.S_IXOTH if perms == "x" else stat.S_IRWXO
    os.chmod(directory, mode | add)
    msg = f"chmod o+{perms} {directory} (setfacl unavailable) so {account.name} can use it"
    output.warn(msg)
    return msg


def _widen_mask(setfacl: str, directory: Path, account: RunAs, bits: int) -> None:
    entries = _acl_entries(directory)
    old = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0)
    new = old | bits
    proc.run([setfacl, "-n", "-m", f"m::{_rwx(new)}", str(directory)],
             what=f"widen the ACL mask of {directory}")
    gainers = [
        f"{_entry_name(tag, ident)} ({_rwx(perm & old)} -> {_rwx(perm & new)})"
        for tag, perm, ident in entries
        if tag in (_ACL_USER, _ACL_GROUP, _ACL_GROUP_OBJ) and perm & new != perm & old
        and not (tag == _ACL_USER and ident == account.uid)
    ]
    msg = (f"widened the ACL mask of {directory} from {_rwx(old)} to {_rwx(new)} so "
           f"{account.name} gets {_rwx(bits)}")
    if gainers:
        output.warn(f"{msg}; this also widens: {', '.join(gainers)}")
    else:
        output.info(f"{msg}; nobody else gains anything")


def chown_tree(path: Path, account: RunAs) -> None:
    os.chown(path, account.uid, account.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), account.uid, account.gid)
