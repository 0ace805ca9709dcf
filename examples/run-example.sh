#!/bin/sh
# Deploy the example project, test it, check it in a throw-away cluster, apply its
# migrations, then remove everything it created (also on failure or Ctrl-C).
#
#   sh examples/run-example.sh          (from anywhere; as root or as a normal user)
#
# The cluster lives in examples/focus/postgresql (unix socket only, no TCP port is opened),
# so it never collides with another PostgreSQL on the machine. Needs `database` on PATH
# (pip install db-tool), else the repository's .venv, else set DATABASE=/path/to/database.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

if [ -z "${DATABASE:-}" ]; then
  if command -v database >/dev/null 2>&1; then
    DATABASE=database
  elif [ -x "$here/../.venv/bin/database" ]; then
    DATABASE=$here/../.venv/bin/database
  else
    echo "run-example.sh: no 'database' command: pip install db-tool (or activate its venv)" >&2
    exit 127
  fi
fi

# Only the example's own settings: nothing of the caller's project may leak in.
unset PGURL DB_URL PG_WORKING_DIR DATABASE_DIR MIGRATION_DIR DATABASE_SOURCE PROFILE_DIR \
  HYDRATE_LOG PATCH_LOG PG_LOG_PATH PG_CONF_FILE PG_REUSE PG_DATABASE PG_URL_VAR \
  HECTIC_DOTENV_FILE HECTIC_DOTENV_CONTENT 2>/dev/null || true
LOCAL_DIR=$here
ENVIRONMENT=development           # hydrate loads $LOCAL_DIR/.env.development into hectic.secret
export LOCAL_DIR ENVIRONMENT

step() { printf '\n==> %s\n' "$*" >&2; }

cleanup() {
  rc=$?
  trap - EXIT INT TERM
  step "database cleanup"
  "$DATABASE" cleanup || rc=1
  rmdir "$LOCAL_DIR/focus" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "database deploy            (fresh cluster -> hectic bundle + secrets -> entrypoint -> test-data.sql)"
"$DATABASE" deploy

# The URL of the running cluster, as `. postgres-init` would export it.
eval "$("$DATABASE" init --reuse --print-env)"

step "database status"
"$DATABASE" status

step "database test              (db/test/test.sql, rolled back afterwards)"
"$DATABASE" test

step "database check             (the whole deploy again, in a throw-away cluster)"
"$DATABASE" check

step "database migrator status   (both migrations are pending: hydrate builds the schema)"
"$DATABASE" migrator status

step "database migrator migrate up   (idempotent migrations: recorded, nothing breaks)"
"$DATABASE" migrator migrate up

step "database test              (still passing after the migrations)"
"$DATABASE" test

step "example OK"
