-- The compose demo's "customer" database, beside the registry in the same
-- PostgreSQL. The postgres image runs this once, when its volume is empty
-- (through psql, so psql's backslash commands work; \getenv needs psql 15+).
--
--   rides.public.trips   seven days of trips ending at the hour the volume
--                        was created (the example's `trips` source)
--   rides_agent          the agent's login: reads trips, and creates the
--                        offline store's schema (larder_offline)
\set ON_ERROR_STOP on
\getenv rides_password RIDES_DB_PASSWORD

CREATE ROLE rides_agent LOGIN PASSWORD :'rides_password';
CREATE DATABASE rides;
GRANT CONNECT, CREATE ON DATABASE rides TO rides_agent;

\connect rides

CREATE TABLE public.trips (
  trip_id      bigint PRIMARY KEY,
  driver_id    bigint NOT NULL,
  customer_id  text NOT NULL,
  fare         double precision,
  distance_km  double precision,
  rating       integer,
  completed_at timestamptz NOT NULL
);

-- Five drivers (1001-1005), twenty customers (c100-c119); every ninth trip unrated.
INSERT INTO public.trips
SELECT n,
       1001 + n % 5,
       'c' || (100 + n % 20),
       round((6 + random() * 38)::numeric, 2),
       round((0.5 + random() * 22)::numeric, 1),
       CASE WHEN n % 9 = 0 THEN NULL ELSE 1 + floor(random() * 5)::int END,
       date_trunc('hour', now()) - interval '7 days' + random() * interval '7 days'
FROM generate_series(1, 3000) AS n;

GRANT SELECT ON public.trips TO rides_agent;
