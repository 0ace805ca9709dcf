"""Kill each long command at random points (SIGKILL, SIGTERM, SIGINT) and check what is left.

One test per command, so each command's verdict shows on its own; the rounds, the checks and
what each command's contract allows are in tests/faults/harness.py and the scenarios below.

What each command may leave running after it is killed (its contract), decided here:
  postgres-init (cold/warm cache, reuse), deploy, restore — the development cluster's postmaster
    (named in data/postmaster.pid): starting it is their job.
  migrate, backup — the development cluster's postmaster, which was running before.
  check, diff — the development cluster's postmaster; after SIGKILL also their throw-away
    clusters (nothing can stop them then), which the next run must remove first. After SIGTERM
    or SIGINT nothing of theirs may remain.
Every other process of the killed run (initdb, cp, psql, pg_basebackup, a postmaster serving
another dir) must be gone within a few seconds.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.faults import harness
from tests.faults.harness import BACKUP_FILES, Killed, Run, Scenario, postmaster_of, unexpected
from tests.helpers import script

ROUNDS = harness.rounds()
pytestmark = [pytest.mark.faults, pytest.mark.timeout(180 + 120 * ROUNDS)]


def token(sc: Scenario) -> str:
    return f"{sc.name.replace('-', '_')}_{sc.round}_{sc.rng.randrange(10**6)}"


# ----------------------------------------------------------------------------- postgres-init


class InitCold(Scenario):
    """A fresh postgres-init with an empty template cache: initdb, template copy, spare."""

    name = "init-cold"

    def prepare(self) -> None:
        self.p.kill_everything()  # a spare copy still running would refill the cache
        shutil.rmtree(self.p.cache, ignore_errors=True)

    def argv(self) -> list[str]:
        return [script("postgres-init")]

    def after_rerun(self, r: Run) -> list[str]:
        # Fresh by contract: no data to keep; the new cluster must work.
        if self.p.psql("SELECT 1") != "1":
            return ["the new cluster does not answer"]
        return []


class InitWarm(InitCold):
    """A fresh postgres-init with a ready template (and usually a spare)."""

    name = "init-warm"

    def setup(self) -> None:
        self.p.must("postgres-init")  # builds the template: the measured run is a warm one

    def prepare(self) -> None:
        pass


class InitReuse(Scenario):
    """PG_REUSE=1 postgres-init of a stopped cluster holding data."""

    name = "init-reuse"

    def setup(self) -> None:
        self.p.must("database", "deploy", "-P")  # the hectic bundle, for the sentinel table
        self.tokens: set[str] = set()

    def prepare(self) -> None:
        self.p.ensure_running()
        t = token(self)
        self.p.add_sentinel(t)
        self.tokens.add(t)
        self.p.must("postgres-cleanup")

    def argv(self) -> list[str]:
        return [script("postgres-init")]

    def env(self) -> dict[str, str]:
        return {**self.p.env, "PG_REUSE": "1"}

    def after_rerun(self, r: Run) -> list[str]:
        missing = self.tokens - self.p.sentinels()
        return [f"data lost: sentinel rows {sorted(missing)} are gone"] if missing else []


# ----------------------------------------------------------------------------- migrate

MIGRATIONS = 30


class Migrate(Scenario):
    """`database migrator migrate up all` of 30 migrations into a database holding data."""

    name = "migrate"

    def setup(self) -> None:
        mig = self.p.root / "db" / "migration"
        for i in range(MIGRATIONS):
            (mig / f"20240101{i:06d}-m{i}.sql").write_text(
                "-- migrate:up\n"
                f"CREATE TABLE public.m{i} (id int PRIMARY KEY) INHERITS (hectic.created_at);\n"
                f"INSERT INTO public.m{i} (id) VALUES ({i});\n"
                "SELECT pg_sleep(0.02);\n"
                "-- migrate:down\n"
                f"DROP TABLE public.m{i};\n"
            )
        self.p.must("database", "deploy", "-P")

    @property
    def db(self) -> str:
        return f"mig{self.round}"

    def prepare(self) -> None:
        self.p.ensure_running()
        self.p.psql(f'CREATE DATABASE "{self.db}" TEMPLATE testdb', "postgres")
        self.token = token(self)
        self.p.add_sentinel(self.token, self.db)

    def argv(self) -> list[str]:
        return [script("database"), "migrator", "migrate", "up", "all"]

    def env(self) -> dict[str, str]:
        return {**self.p.env, "PGURL": self.p.url(self.db)}

    def _state(self) -> tuple[set[str], set[str]]:
        recorded = set(self.p.psql("SELECT name FROM hectic.migration", self.db).split())
        tables = set(self.p.psql(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^m[0-9]+$'",
            self.db).split())
        return {n.split("-", 1)[1] for n in recorded}, tables

    def after_kill(self, k: Killed) -> list[str]:
        recorded, tables = self._state()
        if recorded != tables:
            return [f"half-applied: recorded {sorted(recorded ^ tables)} differ from the "
                    "tables present"]
        return []

    def after_rerun(self, r: Run) -> list[str]:
        problems = []
        recorded, tables = self._state()
        if len(recorded) != MIGRATIONS or recorded != tables:
            problems.append(f"after the next run {len(recorded)} of {MIGRATIONS} migrations "
                            f"recorded, {len(tables)} tables")
        rows = self.p.psql(" UNION ALL ".join(
            f"SELECT count(*) FROM public.m{i}" for i in sorted(int(t[1:]) for t in tables)
        ), self.db).split() if tables else []
        if any(n != "1" for n in rows):
            problems.append("a migration ran twice (a table holds more than one row)")
        if self.token not in self.p.sentinels(self.db):
            problems.append("data lost: the sentinel row is gone")
        return problems


# ----------------------------------------------------------------------------- backup


class Backup(Scenario):
    """`database backup` of a running cluster (~20 MB) replacing the previous backup."""

    name = "backup"

    def setup(self) -> None:
        self.p.must("database", "deploy", "-P")
        self.p.psql("CREATE TABLE public.bulk (id int, t text) INHERITS (hectic.created_at)")
        self.p.psql("INSERT INTO public.bulk (id, t) SELECT g, md5(g::text) || md5((g*7)::text)"
                    " FROM generate_series(1, 100000) g")
        self.p.must("database", "backup")
        self.tokens: set[str] = set()

    def prepare(self) -> None:
        self.p.ensure_running()
        t = token(self)
        self.p.add_sentinel(t)
        self.tokens.add(t)
        self.previous = harness.snapshot(self.p.backup_dir)

    def argv(self) -> list[str]:
        return [script("database"), "backup"]

    def after_kill(self, k: Killed) -> list[str]:
        problems = []
        now = harness.snapshot(self.p.backup_dir)
        complete = all((self.p.backup_dir / f).is_file() for f in BACKUP_FILES)
        if now != self.previous and not complete:
            problems.append(f"the previous backup is gone and no complete one replaced it: "
                            f"{sorted(now) or 'no ' + str(self.p.backup_dir)}")
        if postmaster_of(self.p.data) is not None:
            busy = self.p.psql("SELECT (SELECT count(*) FROM pg_stat_replication) || ' ' || "
                               "(SELECT count(*) FROM pg_replication_slots)", "postgres")
            if busy != "0 0":
                problems.append(f"WAL senders / replication slots still held: {busy}")
        return problems

    def after_rerun(self, r: Run) -> list[str]:
        problems = []
        if postmaster_of(self.p.data) is None:
            problems.append("the development cluster is not running any more")
        elif self.tokens - self.p.sentinels():
            problems.append("data lost in the development cluster")
        missing = [f for f in BACKUP_FILES if not (self.p.backup_dir / f).is_file()]
        if missing:
            problems.append(f"the new backup lacks {missing}")
        return problems

    def leftovers(self, named: str) -> list[str]:
        bad = unexpected(self.p.root, harness.ROOT_FILES, named)
        bad += unexpected(self.p.focus, ["postgresql", "postgresql-backup"], named)
        bad += unexpected(self.p.wd, harness.WD_LAYOUT, named)
        bad += unexpected(self.p.backup_dir, BACKUP_FILES, named)
        return bad


# ----------------------------------------------------------------------------- restore


class Restore(Scenario):
    """`database restore` of the latest backup over a running cluster holding newer data."""

    name = "restore"

    def setup(self) -> None:
        self.p.must("database", "deploy", "-P")
        self.p.psql("CREATE TABLE public.bulk (id int, t text) INHERITS (hectic.created_at)")
        self.p.psql("INSERT INTO public.bulk (id, t) SELECT g, md5(g::text) || md5((g*7)::text)"
                    " FROM generate_series(1, 100000) g")
        self.p.add_sentinel("in_backup")
        self.p.must("database", "backup")
        self.backup = harness.snapshot(self.p.backup_dir)

    def prepare(self) -> None:
        self.p.ensure_running()
        self.live = token(self)
        self.p.add_sentinel(self.live)

    def argv(self) -> list[str]:
        return [script("database"), "restore"]

    def after_kill(self, k: Killed) -> list[str]:
        problems = []
        if harness.snapshot(self.p.backup_dir) != self.backup:
            problems.append("the backup was changed by restore")
        # The data as it was, or the restored one, in data/ — or the previous kept aside.
        kept = [d for d in [self.p.data, *self.p.wd.glob("data.pre-restore-*")]
                if (d / "PG_VERSION").is_file()]
        if not kept:
            problems.append(f"data lost: no data dir left in {self.p.wd} "
                            f"({harness.listing(self.p.wd)})")
        return problems

    def after_rerun(self, r: Run) -> list[str]:
        problems = []
        if harness.snapshot(self.p.backup_dir) != self.backup:
            problems.append("the backup was changed by restore")
        if postmaster_of(self.p.data) is None:
            problems.append("the restored cluster is not running")
        elif self.p.sentinels() != {"in_backup"}:
            problems.append(f"the restored data is not the backup's: {self.p.sentinels()}")
        return problems

    def leftovers(self, named: str) -> list[str]:
        bad = unexpected(self.p.root, harness.ROOT_FILES, named)
        bad += unexpected(self.p.focus, ["postgresql", "postgresql-backup"], named)
        bad += unexpected(self.p.wd, harness.WD_LAYOUT, named)
        return bad


# ----------------------------------------------------------------------------- check


class Check(Scenario):
    """`database check` (a whole deploy in a throw-away cluster) next to a running dev cluster."""

    name = "check"
    killed_leaves = ("postgresql-check-tmp",)

    def setup(self) -> None:
        self.p.must("database", "deploy", "-P")
        self.tokens: set[str] = set()

    def prepare(self) -> None:
        self.p.ensure_running()
        t = token(self)
        self.p.add_sentinel(t)
        self.tokens.add(t)
        self.dev_pid = postmaster_of(self.p.data)

    def argv(self) -> list[str]:
        return [script("database"), "check"]

    def after_rerun(self, r: Run) -> list[str]:
        problems = []
        if postmaster_of(self.p.data) != self.dev_pid:
            problems.append("the development cluster was stopped or restarted")
        elif self.tokens - self.p.sentinels():
            problems.append("data lost in the development cluster")
        return problems

    def leftovers(self, named: str) -> list[str]:
        bad = unexpected(self.p.root, harness.ROOT_FILES, named)
        bad += unexpected(self.p.focus, ["postgresql"], named)
        bad += unexpected(self.p.wd, harness.WD_LAYOUT, named)
        return bad


# ----------------------------------------------------------------------------- diff


class Diff(Check):
    """`database diff`: backup + migrations against the sources, in two throw-away clusters."""

    name = "diff"
    killed_leaves = ("postgresql-diff-tmp/db1", "postgresql-diff-tmp/db2")

    def setup(self) -> None:
        super().setup()
        self.p.must("database", "backup")
        self.backup = harness.snapshot(self.p.backup_dir)

    def argv(self) -> list[str]:
        return [script("database"), "diff"]

    def after_rerun(self, r: Run) -> list[str]:
        problems = super().after_rerun(r)
        if harness.snapshot(self.p.backup_dir) != self.backup:
            problems.append("the backup was changed by diff")
        return problems

    def leftovers(self, named: str) -> list[str]:
        bad = unexpected(self.p.root, harness.ROOT_FILES, named)
        bad += unexpected(self.p.focus,
                          ["postgresql", "postgresql-backup", "postgresql-diff-log"], named)
        bad += unexpected(self.p.wd, harness.WD_LAYOUT, named)
        return bad


# ----------------------------------------------------------------------------- deploy


class Deploy(Scenario):
    """`database deploy` (fresh: init, hydrate, patch); some rounds `deploy --reuse`, which must
    keep the data."""

    name = "deploy"

    def setup(self) -> None:
        self.p.must("database", "deploy")
        self.tokens: set[str] = set()

    def prepare(self) -> None:
        self.reuse = self.rng.random() < 0.3
        if self.reuse:
            self.p.ensure_running()
            t = token(self)
            self.p.add_sentinel(t)
            self.tokens = {t}
            self.p.must("postgres-cleanup")

    def argv(self) -> list[str]:
        return [script("database"), "deploy", *(["--reuse"] if self.reuse else [])]

    def after_rerun(self, r: Run) -> list[str]:
        if postmaster_of(self.p.data) is None:
            return ["the deployed cluster is not running"]
        if self.reuse:
            missing = self.tokens - self.p.sentinels()
            return [f"data lost: sentinel rows {sorted(missing)} are gone"] if missing else []
        items = self.p.psql("SELECT string_agg(name, ',' ORDER BY id) FROM public.item")
        return [] if items == "one,patched" else [f"not hydrated and patched: item = {items!r}"]


# ----------------------------------------------------------------------------- the tests


def _play(cls: type[Scenario], shared_cache: Path | None = None) -> None:
    seed = harness.seed()
    rng = random.Random(f"{seed}-{cls.name}")
    with harness.project(shared_cache) as p:
        tally = harness.play(cls(p, rng), ROUNDS, seed)
    if tally.failures:
        pytest.fail(f"{cls.name}: {len(tally.failures)} of {tally.rounds} rounds failed "
                    f"(faults {tally.faults}, survived {tally.survived}):\n\n"
                    + "\n\n".join(tally.failures), pytrace=False)


@pytest.fixture
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "cache"


def test_faults_init_cold_cache() -> None:
    _play(InitCold)


def test_faults_init_warm_cache() -> None:
    _play(InitWarm)


def test_faults_init_reuse() -> None:
    _play(InitReuse)


def test_faults_migrate(shared_cache: Path) -> None:
    _play(Migrate, shared_cache)


def test_faults_backup(shared_cache: Path) -> None:
    _play(Backup, shared_cache)


def test_faults_restore(shared_cache: Path) -> None:
    _play(Restore, shared_cache)


def test_faults_check(shared_cache: Path) -> None:
    _play(Check, shared_cache)


def test_faults_diff(shared_cache: Path) -> None:
    _play(Diff, shared_cache)


def test_faults_deploy() -> None:
    _play(Deploy)

