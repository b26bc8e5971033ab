#!/usr/bin/env bash
# One-shot step of deploy/docker/compose.yaml, run as root in the postgres
# image (for psql, and to hand the shared volumes to the right users):
#   - /volumes/enrollment: written by the setup step (uid 10001, the control
#     image's user), read by the agent (gid 10002); setgid, so files the setup
#     step writes belong to the agent's group;
#   - /volumes/prometheus-secrets: written by the setup step, read by
#     Prometheus (nobody, gid 65534);
#   - /volumes/example-files: the CSV export the example's driver_stats_files
#     source reads (the agent's local_files connection), made once from the
#     same kind of data the quickstart generates.
set -euo pipefail

install -d -o 10001 -g 10002 -m 2750 /volumes/enrollment
install -d -o 10001 -g 65534 -m 2750 /volumes/prometheus-secrets
install -d -m 0755 /volumes/example-files

csv=/volumes/example-files/driver_hourly_stats.csv
if [ -s "$csv" ]; then
  echo "prepare: $csv exists; kept"
  exit 0
fi
# Hourly statistics of drivers 1001-1005 for the seven days up to this hour.
psql -v ON_ERROR_STOP=1 -qAt -c "COPY (
  SELECT driver AS driver_id, to_char(slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS event_timestamp,
         to_char(slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created,
         round(random()::numeric, 3) AS conv_rate, round(random()::numeric, 3) AS acc_rate,
         floor(random() * 30)::int AS avg_daily_trips
  FROM generate_series(1001, 1005) AS driver,
       generate_series(date_trunc('hour', now()) - interval '7 days',
                       date_trunc('hour', now()) - interval '1 hour', interval '1 hour') AS slot
  ORDER BY slot, driver) TO STDOUT WITH (FORMAT csv, HEADER)" >"$csv.tmp"
chmod 0644 "$csv.tmp"
mv "$csv.tmp" "$csv"
echo "prepare: wrote $csv ($(($(wc -l <"$csv") - 1)) rows)"
