"""The grammar of the five commands, as data: what db_tool.cli.parser parses, what the help's
examples and the shell completion (db_tool.cli.completion) are made from. Imports nothing:
the launchers read it on every start.
"""

from __future__ import annotations

from db_tool.cli.parser import Command, Opt

HELP = Opt("-h", "--help")

# ------------------------------------------------------------------------------- database

DB_GLOBALS = [
    Opt("-u", "--url", metavar="URL", help="connection URL"),
    Opt("-i", "--inherits", metavar="TABLE", repeat=True, help="verify TABLE exists first"),
    Opt("-q", "--quiet", help="only warnings and errors"),
    Opt("--no-pager", dest="no_pager", help="print instead of paging"),
]

_DEPLOY = [
    Opt("-P", "--no-patch", help="skip the patch file"),
    Opt("-H", "--no-hydrate", help="skip hydrate"),
    Opt("-m", "--mock", help="hydrate with -v USE_MOCK=1"),
]

_BRANCH = Command(
    "branch",
    summary="databases of the cluster used like git branches",
    subs=[
        Command("create", summary="copy a database to a new branch",
                opts=[Opt("--from", dest="source", metavar="DB")], max_positional=1,
                examples=["database branch create feature-x",
                          "database branch create fix --from feature-x"]),
        Command("list", summary="the branches", opts=[Opt("--json")],
                examples=["database branch list --json"]),
        Command("switch", summary="use a branch from now on", max_positional=1,
                examples=["database branch switch feature-x"]),
        Command("drop", summary="drop a branch", max_positional=1,
                examples=["database branch drop feature-x"]),
        Command("reset", summary="drop a branch and copy its parent again", max_positional=1,
                examples=["database branch reset feature-x"]),
        Command("current", summary="print the current branch",
                examples=["database branch current"]),
    ],
    max_positional=1,  # an unknown action: named by db_branch
    examples=["database branch create feature-x", "database branch switch feature-x",
              "database branch list"],
)

DATABASE = Command(
    "database",
    summary="development database workflow",
    opts=DB_GLOBALS,
    subs=[
        Command("init", summary="create/reuse and start the cluster",
                opts=[Opt("--reuse"), Opt("--print-env")],
                examples=["database init", "database init --reuse",
                          'eval "$(database init --reuse --print-env)"']),
        Command("cleanup", summary="stop the cluster and remove its working dir",
                examples=["database cleanup"]),
        Command("deploy", summary="init -> hydrate -> patch",
                opts=[*_DEPLOY, Opt("--reuse"), Opt("-c", "--cleanup")],
                examples=["database deploy", "database deploy -P", "database deploy --reuse"]),
        Command("hydrate", summary="apply the bundle, load secrets, run the entrypoint",
                opts=[Opt("-H", "--no-hook"), Opt("-m", "--mock")],
                examples=["database hydrate", "database hydrate -m",
                          "HYDRATE_LOG=hydrate.log database hydrate"]),
        Command("patch", summary="apply (or --edit) the patch file",
                opts=[Opt("-e", "--edit")],
                examples=["database patch", "database patch --edit"]),
        Command("test", summary="run db/test/test.sql without leaving a trace",
                examples=["database test", "database --url \"$PGURL\" test"]),
        Command("check", summary="the whole deploy in a throw-away cluster",
                opts=[*_DEPLOY, Opt("--reuse")],
                examples=["database check", "database check -PH"]),
        Command("status", summary="running?, PostgreSQL, URL, size, pending migrations",
                opts=[Opt("--json")],
                examples=["database status", "database status --json"]),
        Command("log", summary="the server logs", opts=[Opt("-f", "--follow")],
                max_positional=1, words=["list"],
                examples=["database log list", "database log 1", "database log -f"]),
        Command("pull_staging", summary="dump staging tables into the patch file",
                examples=["database pull_staging", "database pull_staging && database patch"]),
        Command("diff", summary="schema and immutable-data drift",
                opts=[Opt("--tables", metavar="a,b"), Opt("--no-cron", dest="no_cron"),
                      Opt("--ignore-migration-fail", dest="ignore"), Opt("-m", "--mock"),
                      Opt("-o", "--output", metavar="FILE"), Opt("--branch", metavar="NAME")],
                max_positional=1, words=["log"],
                examples=["database diff", "database diff --tables users,orders -o drift.diff",
                          "database diff log"]),
        Command("backup", summary="physical backup of the cluster",
                opts=[Opt("--branch", metavar="NAME")],
                examples=["database backup", "database backup --branch feature-x"]),
        Command("restore", summary="replace the cluster's data with a backup",
                opts=[Opt("--archive"), Opt("--previous")], max_positional=1,
                examples=["database restore", "database restore --archive prod.tar.gz",
                          "database restore --previous"]),
        Command("normalize-backup", summary="make a backup from elsewhere restorable here",
                opts=[Opt("-o", "--output", metavar="DIR"), Opt("--role", metavar="NAME"),
                      Opt("--database", metavar="NAME"),
                      Opt("--admin-role", dest="admin_role", metavar="NAME")],
                max_positional=1,
                examples=["database normalize-backup ~/prod-backup",
                          "database normalize-backup -o /tmp/normalized --role app"]),
        Command("bundle", summary="the hectic SQL bundle", max_positional=1,
                words=["path", "sql"],
                examples=["database bundle path", "database bundle sql | psql \"$PGURL\" -f -"]),
        _BRANCH,
        Command("migrator", summary="the migrator with this project's MIGRATION_DIR and URL",
                passthrough="migrator",
                examples=["database migrator migrate up all", "database migrator status"]),
        Command("postgres-init", summary="postgres-init with this project's settings",
                passthrough="postgres-init", examples=["database postgres-init --print-env"]),
        Command("psql", summary="psql on the project's database", passthrough="psql",
                examples=["database psql", "database psql -c 'select version()'"]),
        Command("upgrade", summary="move the cluster to the PostgreSQL major now in use",
                opts=[Opt("--old-bin-dir", dest="old_bin_dir", metavar="DIR"), Opt("--dump")],
                examples=["database upgrade",
                          "database upgrade --old-bin-dir /usr/lib/postgresql/15/bin"]),
        Command("cache", summary="show or prune db-tool's cache",
                opts=[Opt("--all"), Opt("--older-than", dest="older_than", metavar="DAYS"),
                      Opt("-n", "--dry-run", dest="dry_run")],
                max_positional=1, words=["list", "prune"],
                examples=["database cache", "database cache prune --dry-run"]),
        Command("help", summary="the help of a subcommand", max_positional=1,
                examples=["database help deploy"]),
        Command("completion", summary="shell completion script for all five commands",
                max_positional=1, words=["bash", "zsh", "fish"],
                examples=["database completion bash > ~/.local/share/bash-completion/"
                          "completions/database",
                          "database completion fish > ~/.config/fish/completions/database.fish"]),
    ],
    examples=["database deploy", "database status", "database help deploy"],
    missing="{arg} needs a value; see database --help",
)

# `database help <TAB>` completes the subcommands
DATABASE.sub("help").words = [n for n in DATABASE.subs if n != "help"]

# ------------------------------------------------------------------------------- migrator

MIGRATOR_GLOBALS = [
    Opt("-u", "--db-url", dest="db_url", metavar="URL"),
    Opt("-d", "--migration-dir", dest="migration_dir", metavar="DIR"),
    Opt("--inherits", metavar="TABLE"),
]
_SET = Opt("-v", "--set", metavar="VAR=VAL", repeat=True)
_STATUS_OPTS = [Opt("--json"), Opt("--exit-code", dest="exit_code"), Opt("--strict")]

MIGRATOR = Command(
    "migrator",
    summary="apply, roll back, create and inspect migrations",
    opts=MIGRATOR_GLOBALS,
    subs=[
        Command("init", summary="apply the hectic bundle", opts=[Opt("--dry-run", dest="dry_run"),
                                                                 _SET],
                examples=["migrator init", "migrator init --dry-run"]),
        Command("migrate", summary="apply or roll back migrations",
                opts=[Opt("-f", "--force"), Opt("--strict"), _SET], max_positional=2,
                words=["up", "down", "to"],
                examples=["migrator migrate up all", "migrator migrate down 2",
                          "migrator migrate to 20240101120000-add-users"]),
        Command("create", summary="new migration file", opts=[Opt("-n", "--name", metavar="NAME")],
                examples=["migrator create -n add-users"]),
        Command("list", summary="migration names in order", opts=[Opt("-r", "--raw")],
                examples=["migrator list", "migrator list --raw"]),
        Command("status", summary="applied / pending / missing / modified", opts=_STATUS_OPTS,
                examples=["migrator status", "migrator status --exit-code"]),
        Command("fetch", summary="alias of status", opts=_STATUS_OPTS,
                examples=["migrator fetch --json"]),
    ],
    examples=["migrator -u \"$PGURL\" migrate up all", "migrator create -n add-users",
              "migrator status"],
)

for _c in (MIGRATOR, *MIGRATOR.subs.values()):
    _c.missing = "option {arg} needs a value"  # the original's words

# ------------------------------------------------------------------------------- db-ops

# The original db-ops's words (scripts may match them): "argument X does not exist".
DB_OPS = Command(
    "db-ops",
    summary="the hectic bundle and secrets for a deployment target",
    opts=[Opt("-u", "--url", metavar="URL")],
    subs=[
        Command("secrets", summary="secrets of hectic.secret", subs=[
            Command("load", summary="apply the bundle, then load a dotenv's pairs",
                    opts=[Opt("-u", "--url", metavar="URL"),
                          Opt("-f", "--dotenv-file", dest="dotenv_file", metavar="PATH")],
                    examples=["db-ops -u \"$DB_URL\" secrets load -f .env.production",
                              "HECTIC_DOTENV_CONTENT=\"$(cat .env)\" db-ops secrets load"],
                    unknown="secrets load argument {arg} does not exist; see db-ops secrets "
                            "load --help",
                    extra="secrets load subcommand {arg} does not exist; see db-ops secrets "
                          "load --help",
                    missing="missing value for {arg}"),
        ], examples=["db-ops secrets load -f .env.production"]),
    ],
    examples=["db-ops -u \"$DB_URL\" secrets load -f .env.production",
              "db-ops secrets load --help"],
    unknown="argument {arg} does not exist; see db-ops --help",
    missing="missing value for {arg}",
)

# ------------------------------------------------------------------------------- hooks

POSTGRES_INIT = Command(
    "postgres-init",
    summary="create or reuse the project's cluster and start it",
    opts=[Opt("--print-env", dest="print_env")],
    examples=[". postgres-init", 'eval "$(postgres-init --print-env)"',
              "PG_REUSE=1 . postgres-init"],
    unknown="unknown argument {arg!r}; see postgres-init --help",
    extra="unknown argument {arg!r}; see postgres-init --help",
)

POSTGRES_CLEANUP = Command(
    "postgres-cleanup",
    summary="stop the project's cluster",
    examples=["postgres-cleanup", "trap postgres-cleanup EXIT"],
    unknown="unknown argument {arg!r}; see postgres-cleanup --help",
    extra="unknown argument {arg!r}; see postgres-cleanup --help",
)

COMMANDS = {c.name: c for c in (DATABASE, MIGRATOR, DB_OPS, POSTGRES_INIT, POSTGRES_CLEANUP)}

# Every command takes these two; they are answered before the command's own parsing.
VERSION = Opt("--version")
