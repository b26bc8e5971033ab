#!/usr/bin/env bash
# One-shot step of deploy/docker/compose.yaml, run with the larder CLI of the
# larder-control image and the bootstrap admin's token (LARDER_TOKEN,
# LARDER_URL from compose). Each step can run again on every `up`:
#   1. creates the driver-stats workspace when missing and applies the example
#      repository (mounted read-only at /examples/driver-stats);
#   2. makes a fresh one-time enrollment token for the agent (environment
#      "compose"), read by the agent's enroll step; an agent already enrolled
#      keeps its credentials and never uses it (it expires after an hour);
#   3. once: a service account "prometheus" and a token of it, which
#      Prometheus sends when it scrapes the control plane's /metrics (any
#      signed-in principal may read them).
set -euo pipefail

workspace=driver-stats
repository=/examples/driver-stats
enrollment_dir=/volumes/enrollment
prometheus_dir=/volumes/prometheus-secrets
# Group-readable: the agent and Prometheus read through their group (see prepare.sh).
umask 027

# Writes standard input to $1 atomically, so a reader never sees half a token.
write_file() {
  cat >"$1.tmp"
  mv "$1.tmp" "$1"
}

# Whether a CLI table on standard input has a row whose first column is $1.
has_row() { awk -v name="$1" 'NR > 1 && $1 == name { found = 1 } END { exit !found }'; }

larder whoami

workspaces=$(larder workspaces ls)
if has_row "$workspace" <<<"$workspaces"; then
  echo "setup: workspace $workspace exists"
else
  larder workspaces create "$workspace" --description "The Larder example repository (compose demo)"
fi
larder apply --yes "$repository"

# The agent's environment: its offline and online stores, its materializations.
if larder environments describe -w "$workspace" compose >/dev/null 2>&1; then
  echo "setup: environment compose exists"
else
  larder environments create -w "$workspace" compose --online-store redis --description "the compose demo's two agents, sharing Redis"
fi

# `larder agents enroll-token` prints a header line, the token (lre_…) alone
# on its line, then the control plane key's fingerprint and a hint.
# One per agent: token for larder-agent, token-2 for larder-agent-2.
for file in token token-2; do
  printed=$(larder agents enroll-token -w "$workspace" --environment compose --ttl 1h)
  token=$(grep -E '^lre_' <<<"$printed" || true)
  if [ -z "$token" ]; then
    echo "setup: no enrollment token in the CLI's answer:" >&2
    grep -v '^lre_' <<<"$printed" >&2 || true
    exit 1
  fi
  printf '%s\n' "$token" | write_file "$enrollment_dir/$file"
done
# The enroll step prints the fingerprint it pinned: the two must agree.
fingerprint=$(sed -n 's/^control plane key fingerprint[^:]*: //p' <<<"$printed")
echo "setup: wrote two enrollment tokens for environment compose; control plane key fingerprint $fingerprint"

if [ -s "$prometheus_dir/larder-control-token" ]; then
  echo "setup: Prometheus' token exists; kept"
else
  principals=$(larder principals ls)
  if ! has_row prometheus <<<"$principals"; then
    larder service-accounts create prometheus --description "Scrapes /metrics (compose demo)"
  fi
  # `larder tokens create` prints only the token on standard output.
  # Audience metrics: the token reads /metrics and nothing else.
  larder tokens create --principal prometheus --audience metrics --description "compose Prometheus scrape" \
    | write_file "$prometheus_dir/larder-control-token"
  echo "setup: wrote Prometheus' token"
fi
