"""Fault injection: run a real CLI command, kill it at a random point, then check what is left.

One *round*: bring the project into the command's start state (`prepare`), start the installed
console script as a child in its own session, send SIGKILL / SIGTERM (to the process, like
`kill` or `timeout`) or SIGINT (to its process group, like Ctrl-C on a terminal) after a delay
drawn from the command's measured duration, then assert:

* no orphan process: after a grace period, no process of the killed run is still alive — found
  by walking /proc: everything new since the round started whose session is the killed run's,
  whose argv or cwd names the project dir, and their descendants — except what the command's
  contract leaves running (`allowed_after_kill`: the development cluster's postmaster named in
  its postmaster.pid, for commands that start or keep it);
* no data lost (`check_data`): the sentinel rows written before the round are still there, or
  the previous generation is kept and named;
* the next run succeeds: the same command, unfaulted, exits 0;
* no leftover it does not name (`leftovers`): after the next run the project, working, backup,
  temp and cache dirs hold only the documented layout plus paths that a run's output named.

Everything runs the installed console scripts next to sys.executable (as tests/helpers.py does),
real clusters with the real PostgreSQL binaries, as whoever runs pytest (root in CI, then the
unprivileged pass).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.dbproject import ENTRYPOINT, TABLES, short_dir
from tests.helpers import base_env, next_port, script, stop_quietly

GRACE = 5.0  # seconds a dead run's children get to notice and exit
TRANSIENT_GRACE = 60.0  # the background copies/removals db-tool starts on purpose
RUN_TIMEOUT = 180.0
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)

PATCH = "INSERT INTO public.item (id, name) VALUES (2, 'patched');\n"
SENTINEL_TABLE = "public.fault_sentinel"


def rounds() -> int:
    return int(os.environ.get("DB_TOOL_FAULT_ROUNDS", "3"))


def budget() -> float | None:
    """Seconds of rounds per command (at least one round runs): DB_TOOL_FAULT_SECONDS, else 20
    unless DB_TOOL_FAULT_ROUNDS is set (then all its rounds run). Keeps CI time bounded on a
    slow machine."""
    value = os.environ.get("DB_TOOL_FAULT_SECONDS")
    if value:
        return float(value) if float(value) > 0 else None
    return None if os.environ.get("DB_TOOL_FAULT_ROUNDS") else 20.0


def seed() -> int:
    value = os.environ.get("DB_TOOL_FAULT_SEED")
    return int(value) if value else SESSION_SEED


SESSION_SEED = random.SystemRandom().randrange(1, 10**9)


# ----------------------------------------------------------------------------- tally


@dataclass
class Tally:
    rounds: int = 0
    faults: int = 0  # rounds where the signal reached a command that was still running
    survived: int = 0  # rounds where every check held
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


TALLY: dict[str, Tally] = {}


# ----------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    state: str
    argv: tuple[str, ...]
    cwd: str
    age: float = 0.0

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)

    def __str__(self) -> str:
        return (f"pid {self.pid} (ppid {self.ppid}, sid {self.sid}, state {self.state}, "
                f"age {self.age:.1f}s): {self.cmdline[:200]}")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def processes() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid, sid = fields[0], int(fields[1]), int(fields[3])
        age = _uptime() - int(fields[19]) / _CLK_TCK
        if state == "Z":
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        found[pid] = Proc(pid, ppid, sid, state, argv, cwd, age)
    return found


def descendants(procs: dict[int, Proc], roots: Iterable[int]) -> set[int]:
    out = set(roots)
    grew = True
    while grew:
        grew = False
        for p in procs.values():
            if p.ppid in out and p.pid not in out:
                out.add(p.pid)
                grew = True
    return out


def round_processes(before: set[int], sid: int, marks: Iterable[Path],
                    procs: dict[int, Proc] | None = None) -> dict[int, Proc]:
    """Processes that appeared since `before` and belong to the run: its session, or naming one
    of `marks` (the project dir, the cache) in argv or cwd; with all their descendants."""
    procs = processes() if procs is None else procs
    needles = [str(m) for m in marks]
    seeds = [
        p.pid for p in procs.values()
        if p.pid not in before and p.pid != os.getpid()
        and (p.sid == sid or any(_names(p, n) for n in needles))
    ]
    return {pid: procs[pid] for pid in descendants(procs, seeds) if pid not in before}


def _names(p: Proc, path: str) -> bool:
    if p.cwd == path or p.cwd.startswith(path + "/"):
        return True
    return any(a == path or path + "/" in a for a in p.argv)  # JSON arguments too


def postmaster_of(datadir: Path) -> int | None:
    """The live postmaster that postmaster.pid of `datadir` names and that serves `datadir`."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if len(argv) >= 3 and argv[1] == b"-D" and argv[2] == str(datadir).encode():
        return pid
    return None


def _transient_root(p: Proc) -> bool:
    argv = p.argv[3:] if p.argv[:1] and p.argv[0].endswith("ionice") else p.argv
    return (
        "db_tool.template_cache" in argv  # the background template builder / spare copier
        or argv[:3] == ("rm", "-rf", "--")  # a background removal of a discarded dir
        or "db-tool-spare" in argv  # older releases' spare copy
    )


def transient(procs: dict[int, Proc]) -> set[int]:
    """db-tool's own detached background work, meant to outlive the run, with its children."""
    return descendants(procs, [p.pid for p in procs.values() if _transient_root(p)])


def wait_transients(marks: Iterable[Path], timeout: float = TRANSIENT_GRACE) -> list[Proc]:
    """Wait for db-tool's background work naming `marks`; returns what still runs after it."""
    marks = list(marks)
    deadline = time.monotonic() + timeout
    while True:
        procs = round_processes(set(), -1, marks)
        left = [procs[pid] for pid in transient(procs) if pid in procs]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)


# ----------------------------------------------------------------------------- files


def listing(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in path.iterdir())
    except FileNotFoundError:
        return []


def unexpected(path: Path, allowed: Iterable[str], named: str) -> list[str]:
    """Entries of `path` that match no pattern in `allowed` and that no output named."""
    patterns = list(allowed)
    bad = []
    for name in listing(path):
        if any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            continue
        if str(path / name) in named:
            continue
        bad.append(str(path / name))
    return bad


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue  # removed meanwhile
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    argv: list[str]
    returncode: int
    out: str
    err: str
    seconds: float

    def text(self) -> str:
        return self.out + self.err

    def describe(self) -> str:
        tail = "\n".join((self.err or self.out).strip().splitlines()[-12:])
        return f"{' '.join(self.argv)} -> exit {self.returncode} in {self.seconds:.2f}s\n{tail}"


def run(argv: list[str], env: dict[str, str], timeout: float = RUN_TIMEOUT) -> Run:
    started = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, check=False)
    return Run(argv, r.returncode, r.stdout, r.stderr, time.monotonic() - started)


@dataclass
class Killed:
    run: Run
    sig: signal.Signals
    delay: float
    fault: bool  # the command was still running when the signal was sent
    sid: int


def run_and_kill(argv: list[str], env: dict[str, str], delay: float,
                 sig: signal.Signals) -> Killed:
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True)
        note = ""
        try:
            while time.monotonic() - started < delay and child.poll() is None:
                time.sleep(0.002)
            fault = child.poll() is None
            if fault:
                with contextlib.suppress(ProcessLookupError):
                    if sig == signal.SIGINT:
                        os.killpg(child.pid, sig)  # Ctrl-C: the terminal signals the group
                    else:
                        os.kill(child.pid, sig)
            try:
                rc = child.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                note = f"\n[harness: still running {RUN_TIMEOUT:.0f}s after {sig.name}; killed]\n"
                child.kill()
                rc = child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        out.seek(0)
        err.seek(0)
        r = Run(argv, rc, out.read().decode(errors="replace"),
                err.read().decode(errors="replace") + note, time.monotonic() - started)
    return Killed(r, sig, delay, fault, child.pid)


# ----------------------------------------------------------------------------- project


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    @property
    def focus(self) -> Path:
        return self.root / "focus"

    @property
    def wd(self) -> Path:
        return self.focus / "postgresql"

    @property
    def data(self) -> Path:
        return self.wd / "data"

    @property
    def backup_dir(self) -> Path:
        return self.focus / "postgresql-backup"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def port(self) -> int:
        return int(self.env["PG_PORT"])

    def url(self, db: str = "testdb") -> str:
        from db_tool.cluster import build_url
        from db_tool.settings import login_name

        return build_url(login_name(), db, self.wd / "sock", self.port)

    def cli(self, name: str, *args: str, **extra: str) -> Run:
        return run([script(name), *args], {**self.env, **extra})

    def must(self, name: str, *args: str, **extra: str) -> Run:
        r = self.cli(name, *args, **extra)
        assert r.returncode == 0, r.describe()
        return r

    def psql(self, sql: str, db: str = "testdb") -> str:
        out = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url(db), "-c", sql],
            capture_output=True, text=True, check=False, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def ensure_running(self) -> None:
        if postmaster_of(self.data) is None:
            self.must("postgres-init", PG_REUSE="1")

    def add_sentinel(self, token: str, db: str = "testdb") -> None:
        self.psql(f"CREATE TABLE IF NOT EXISTS {SENTINEL_TABLE} (token text PRIMARY KEY) "
                  "INHERITS (hectic.created_at)", db)
        self.psql(f"INSERT INTO {SENTINEL_TABLE} (token) VALUES ('{token}')", db)

    def sentinels(self, db: str = "testdb") -> set[str]:
        return set(self.psql(f"SELECT token FROM {SENTINEL_TABLE}", db).split())

    def files(self) -> dict[str, tuple[int, int]]:
        """The project's own files (sources, migrations, patch file): never changed."""
        snap = snapshot(self.root / "db")
        with contextlib.suppress(OSError):
            st = (self.root / "test-data.sql").stat()
            snap["test-data.sql"] = (st.st_size, st.st_mtime_ns)
        return snap

    def kill_everything(self) -> None:
        procs = round_processes(set(), -1, [self.root])
        kill_all(procs)

    def remove(self) -> None:
        self.kill_everything()
        for wd in (self.wd, self.focus / "postgresql-check-tmp",
                   self.focus / "postgresql-diff-tmp" / "db1",
                   self.focus / "postgresql-diff-tmp" / "db2"):
            stop_quietly(wd)
        self.kill_everything()
        shutil.rmtree(self.root, ignore_errors=True)


def populate(root: Path) -> None:
    """The project's files: sources, an empty migration dir, the patch file, a TMPDIR."""
    if os.geteuid() == 0:
        os.chmod(root, 0o711)  # the server account must reach the clusters below
    (root / "db" / "src").mkdir(parents=True)
    (root / "db" / "src" / "entrypoint.sql").write_text(ENTRYPOINT)
    (root / "db" / "src" / "tables.sql").write_text(TABLES)
    (root / "db" / "migration").mkdir()
    (root / "test-data.sql").write_text(PATCH)
    fresh_tmp(root / "tmp")


def fresh_tmp(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    if os.geteuid() == 0:
        os.chmod(path, 0o1777)


@contextlib.contextmanager
def project(shared_cache: Path | None = None) -> Iterator[Project]:
    """A project with its own TMPDIR and template cache (in it: checked, and killed runs' helpers
    are found by its path) or, for commands whose subject is not the cache, `shared_cache`
    without spare copies (less disk traffic; the init scenarios cover spares)."""
    root = short_dir("dbf-")
    env = base_env(LOCAL_DIR=str(root), PG_PORT=str(next_port()),
                   PG_SHARED_PRELOAD_LIBRARIES="", XDG_CACHE_HOME=str(root / "cache"),
                   TMPDIR=str(root / "tmp"), NO_COLOR="1")
    for var in ("PGURL", "DB_URL", "PG_WORKING_DIR", "PG_DATABASE", "PG_LOG_PATH", "PAGER",
                "PG_REUSE", "DB_TOOL_NO_SPARE"):
        env.pop(var, None)
    if shared_cache is not None:
        env.update(XDG_CACHE_HOME=str(shared_cache), DB_TOOL_NO_SPARE="1")
    p = Project(root, env)
    populate(root)
    try:
        yield p
    finally:
        p.remove()


# ----------------------------------------------------------------------------- rounds


# data.previous: the one previous generation a fresh init keeps (docs, `restore --previous`)
WD_LAYOUT = ("data", "sock", "log", "postgres-init.log", ".db-tool-created", ".db-tool.lock",
             "data.previous")
BACKUP_FILES = ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest", "database_name")
ROOT_FILES = ("db", "test-data.sql", "focus", "cache", "tmp")


def cache_leftovers(p: Project, named: str) -> list[str]:
    """The template cache: per key `ready`, `data`, `lock`, `spares/ready-*` — nothing half;
    beside it pgbin's memo of pg_config's answers (replaced in one rename, never half)."""
    bad = unexpected(p.cache, ["db-tool"], named)
    bad += unexpected(p.cache / "db-tool", ["templates", "pgbin.memo"], named)
    templates = p.cache / "db-tool" / "templates"
    for key in listing(templates):
        tdir = templates / key
        if not (tdir / "ready").is_file():
            bad.append(f"{tdir} (a template without `ready`)")
        bad += unexpected(tdir, ["ready", "data", "lock", "spares"], named)
        bad += unexpected(tdir / "spares", ["ready-*"], named)
    return bad


class Scenario:
    """One long command under fault injection. Subclasses fill in the contract."""

    name = ""
    #: a SIGKILLed run may leave these throw-away clusters running; the next run removes them
    killed_leaves: tuple[str, ...] = ()

    def __init__(self, p: Project, rng: random.Random) -> None:
        self.p = p
        self.rng = rng
        self.round = 0

    # -- contract ------------------------------------------------------------------------
    def setup(self) -> None:
        """Once (and after a failed round): build what the command needs."""

    def prepare(self) -> None:
        """Before each round: the command's start state and the sentinel."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(self.p.env)

    def keeps_running(self) -> list[Path]:
        """Data dirs whose postmaster the command's contract leaves running."""
        return [self.p.data]

    def after_kill(self, k: Killed) -> list[str]:
        """Checks right after the killed run (before the next run)."""
        return []

    def after_rerun(self, r: Run) -> list[str]:
        """Checks after the next, unfaulted run succeeded: data kept, command's effect there."""
        return []

    def leftovers(self, named: str) -> list[str]:
        p = self.p
        bad = unexpected(p.root, ROOT_FILES, named)
        bad += unexpected(p.focus, ["postgresql"], named)
        bad += unexpected(p.wd, WD_LAYOUT, named)
        bad += cache_leftovers(p, named)
        return bad

    # -- machinery -----------------------------------------------------------------------
    def allowed(self, killed_by: signal.Signals | None, procs: dict[int, Proc]) -> set[int]:
        roots = [pid for d in self.keeps_running() if (pid := postmaster_of(d)) is not None]
        if killed_by == signal.SIGKILL:
            for rel in self.killed_leaves:
                # A SIGKILLed run cannot stop them; the next run must (checked after it).
                datadir = self.p.focus / rel / "data"
                roots += [p.pid for p in procs.values()
                          if p.argv[1:3] == ("-D", str(datadir))]
        return descendants(procs, roots)

    def orphans(self, before: set[int], sid: int, sig: signal.Signals | None,
                grace: float) -> list[Proc]:
        """Processes of the run that are not allowed and still alive after `grace` seconds.
        db-tool's own detached helpers (spare copy, background removal) are not orphans: they
        are meant to outlive the run (and are waited for at the end of the test)."""
        started = time.monotonic()
        while True:
            everything = processes()  # one snapshot: a process may exit between two scans
            procs = round_processes(before, sid, [self.p.root], everything)
            allowed = self.allowed(sig, everything) | transient(everything)
            bad = [p for pid, p in procs.items() if pid not in allowed]
            if not bad or time.monotonic() - started >= grace:
                return bad
            time.sleep(0.05)


def measure(sc: Scenario) -> float:
    sc.setup()
    sc.prepare()
    r = run(sc.argv(), sc.env())
    assert r.returncode == 0, f"[{sc.name}] the unfaulted run failed:\n{r.describe()}"
    problems = sc.after_rerun(r)
    assert not problems, f"[{sc.name}] the unfaulted run: " + "; ".join(problems)
    return r.seconds


def play(sc: Scenario, n: int, seed_value: int) -> Tally:
    tally = TALLY.setdefault(sc.name, Tally())
    began = time.monotonic()
    try:
        return _play(sc, n, seed_value, tally)
    finally:
        tally.seconds += time.monotonic() - began


def _play(sc: Scenario, n: int, seed_value: int, tally: Tally) -> Tally:
    durations = [measure(sc)]
    limit = budget()
    first = time.monotonic()
    for i in range(1, n + 1):
        if i > 1 and limit is not None and time.monotonic() - first > limit:
            break  # out of time: the tally says how many rounds ran
        sc.round = i
        sig = sc.rng.choice(SIGNALS)
        # Drawn from the command's duration as measured so far (the unfaulted runs).
        duration = statistics.median(durations)
        delay = sc.rng.uniform(0.0, duration)
        problems: list[str] = []
        sc.prepare()
        files_before = sc.p.files()
        before = set(processes())
        k = run_and_kill(sc.argv(), sc.env(), delay, sig)
        tally.rounds += 1
        tally.faults += k.fault
        where = (f"[{sc.name} round {i}, seed {seed_value}: {sig.name} after {delay:.3f}s "
                 f"of ~{duration:.2f}s, killed run exited {k.run.returncode}]")
        # As tests/test_cli_interrupt.py: a traceback through db-tool's own files. (Python's
        # start-up before db_tool's first line is out of any package's reach.)
        if sig != signal.SIGKILL and "Traceback" in k.run.err and "/db_tool/" in k.run.err:
            problems.append("the interrupted run printed a traceback:\n" + k.run.describe())
        stray = sc.orphans(before, k.sid, sig, GRACE)
        if stray:
            problems.append("orphan processes of the killed run:\n  "
                            + "\n  ".join(map(str, stray)))
        problems += sc.after_kill(k)
        rerun = run(sc.argv(), sc.env())
        if rerun.returncode != 0:
            problems.append("the next run failed: " + rerun.describe())
        else:
            durations.append(rerun.seconds)
            problems += sc.after_rerun(rerun)
            stray = sc.orphans(before, k.sid, None, 1.0)
            if stray:
                problems.append("still running after the next run:\n  "
                                + "\n  ".join(map(str, stray)))
            # db-tool's background work (template build, spare copy, removals) may still be
            # writing: what it leaves once done is what counts.
            stuck = wait_transients([sc.p.root])
            if stuck:
                problems.append(f"background work still running after {TRANSIENT_GRACE:.0f}s:"
                                "\n  " + "\n  ".join(map(str, stuck)))
            named = k.run.text() + rerun.text()
            problems += [f"leftover {x}" for x in sc.leftovers(named)]
            if sig != signal.SIGKILL:
                problems += [f"temp file of the interrupted run left: {x}"
                             for x in unexpected(sc.p.tmp, [], "")]
        if sc.p.files() != files_before:
            problems.append("the project's own files changed")
        if problems:
            tally.failures.append(
                where + "\n" + "\n".join(problems)
                + "\n  killed run: " + k.run.describe().replace("\n", "\n    ")
                + "\n  next run: " + rerun.describe().replace("\n", "\n    "))
            sc.p.remove()  # the next round starts from a clean project
            sc.p.root.mkdir()
            populate(sc.p.root)
            sc.setup()
        else:
            tally.survived += 1
        # What a SIGKILLed run leaves in $TMPDIR is the OS's to clean: a fresh one per round.
        fresh_tmp(sc.p.tmp)
    stuck = wait_transients([sc.p.root])
    if stuck:
        tally.failures.append(f"[{sc.name}] background helpers still running "
                              f"{TRANSIENT_GRACE:.0f}s after the last round:\n  "
                              + "\n  ".join(map(str, stuck)))
    return tally
