"""Airflow: the nightly collection as one mapped task a shard, then verify, then load.

Each of the SHARDS mapped `collect` tasks runs `collector run --shard K/SHARDS` into its own
directory with 1/SHARDS of the site's rate; `verify` checks every shard's run with
`collector verify`; `load` reads them into DuckDB only once all are whole. A retried task
continues its shard with --resume. Exit 1 (some machines failed, listed in errors.ndjson) still
lets the run be verified and loaded; 2, 3 and 130 fail the task.

The workers need `pip install collector` (or run the same commands in the image of
deploy/Dockerfile with a KubernetesPodOperator) and the configuration below, whose [auth]
*_file keys point at the API client's id and secret on the worker. Change SHARDS, the `/8` and
the rate together: 20 requests/s for the site is 2.5 a shard.
"""

from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

SHARDS = 8
SITE_RATE = 20.0  # requests/s the whole site may take; each shard gets SITE_RATE / SHARDS

COLLECT = (
    'OUT="/data/sessions/{{ ds }}/shard-$SHARD"; rc=0; '
    'collector run -c /etc/collector/site.toml --out "$OUT" --shard "$SHARD/8" --rate 2.5 '
    '--resume --no-progress --log-format json --metrics-file "$OUT.prom" || rc=$?; '
    'if [ "$rc" -gt 1 ]; then exit "$rc"; fi'
)
VERIFY = (
    "for shard in $(seq 0 7); do "
    'collector verify "/data/sessions/{{ ds }}/shard-$shard" || exit 1; '
    "done"
)
LOAD = (
    'duckdb /data/warehouse.duckdb -c "CREATE OR REPLACE TABLE sessions_{{ ds_nodash }} AS '
    "SELECT * FROM read_json_auto('/data/sessions/{{ ds }}/shard-*/sessions-*.ndjson')\""
)

with DAG(
    dag_id="collector_sessions",
    schedule="15 2 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["citrix", "collector"],
) as dag:
    collect = BashOperator.partial(
        task_id="collect",
        bash_command=COLLECT,
        append_env=True,
        retries=2,
        retry_delay=pendulum.duration(minutes=5),
    ).expand(env=[{"SHARD": str(shard)} for shard in range(SHARDS)])
    verify = BashOperator(task_id="verify", bash_command=VERIFY)
    load = BashOperator(task_id="load", bash_command=LOAD)

    collect >> verify >> load
