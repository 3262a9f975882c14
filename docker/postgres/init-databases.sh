#!/usr/bin/env bash
# Creates the two databases of the stack, each owned by its own login role:
#   airflow  (user airflow, password $AIRFLOW_DB_PASSWORD)  — Airflow metadata
#   mlflow   (user mlflow,  password $MLFLOW_DB_PASSWORD)   — MLflow tracking + model registry
# Run by the postgres image from /docker-entrypoint-initdb.d on the first start of an empty data directory, as the
# superuser $POSTGRES_USER. Idempotent (safe to run again by hand); re-running also resets both passwords to the
# current values. Passwords are passed as psql variables and quoted by psql (:'var'), never spliced into SQL text.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"

psql --no-psqlrc --set ON_ERROR_STOP=1 \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set airflow_password="$AIRFLOW_DB_PASSWORD" \
  --set mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', n)
FROM (VALUES ('airflow'), ('mlflow')) AS wanted(n)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = n)
\gexec

ALTER ROLE airflow WITH LOGIN PASSWORD :'airflow_password';
ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';

SELECT format('CREATE DATABASE %I OWNER %I', n, n)
FROM (VALUES ('airflow'), ('mlflow')) AS wanted(n)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = n)
\gexec

-- Each service reaches its own database only.
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
GRANT ALL PRIVILEGES ON DATABASE airflow TO airflow;
GRANT ALL PRIVILEGES ON DATABASE mlflow TO mlflow;
SQL
