#!/usr/bin/env bash
# One-shot step of deploy/docker/compose.yaml, run as root in the larder-agent
# image (for its openssl, and to give the key to the agent's user): the
# certificate and key the agent's feature server answers HTTPS with, in the
# serving-tls volume (/volumes/serving-tls here):
#   - tls.crt: the certificate (PEM), owned by root, readable by everyone:
#     Prometheus (nobody, uid 65534) trusts it, clients copy it;
#   - tls.key: its private key (PEM, unencrypted), owned by the agent's user
#     (uid and gid 10002, the image's larder-agent) and readable by it only.
# Which pair, in this order:
#   1. one you give: tls.crt and tls.key in a folder mounted at /provided,
#      copied into the volume over what it holds:
#        docker compose -f deploy/docker/compose.yaml run --rm \
#          -v "$PWD/my-tls:/provided:ro" serving-tls
#   2. the one the volume holds already: kept across restarts;
#   3. otherwise a new self-signed one for the names the agent is reached by:
#      larder-agent and larder-agent-2 (the compose network), localhost and 127.0.0.1 (the
#      published port), valid for 825 days like the Helm chart's. For a new
#      one, remove the old certificate first:
#        docker compose -f deploy/docker/compose.yaml run --rm --entrypoint rm \
#          serving-tls /volumes/serving-tls/tls.crt
# Every run sets the files' owners and modes again, and checks that the key
# is the certificate's. The agent reads them when it starts: restart it after
# a change (docker compose -f deploy/docker/compose.yaml restart larder-agent).
set -euo pipefail

dir=/volumes/serving-tls
provided=/provided
certificate=$dir/tls.crt
key=$dir/tls.key
# The larder-agent image's user and group (deploy/docker/Dockerfile).
agent=10002
# No file made here is readable by others until its mode says so.
umask 077

install -d -o 0 -g 0 -m 0755 "$dir"
# Left by a run that was interrupted.
rm -f "$certificate.tmp" "$key.tmp"

# The pair to check and install (new_*), and where it came from (origin).
if [ -e "$provided/tls.crt" ] || [ -e "$provided/tls.key" ]; then
  if [ ! -s "$provided/tls.crt" ] || [ ! -s "$provided/tls.key" ]; then
    echo "serving-tls: $provided needs both tls.crt and tls.key" >&2
    exit 1
  fi
  origin=$provided new_certificate=$certificate.tmp new_key=$key.tmp
  cp "$provided/tls.crt" "$new_certificate"
  cp "$provided/tls.key" "$new_key"
  echo "serving-tls: copying the certificate and key from $provided"
elif [ -s "$certificate" ] && [ -s "$key" ]; then
  origin=$dir new_certificate=$certificate new_key=$key
  echo "serving-tls: $certificate exists; kept"
else
  origin=$dir new_certificate=$certificate.tmp new_key=$key.tmp
  # -addext replaces the basicConstraints of openssl.cnf's v3_ca section:
  # a server's certificate, not a CA's (some clients refuse a CA's as a
  # server's). The dashes on standard error are openssl's progress.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout "$new_key" -out "$new_certificate" -days 825 \
    -subj /CN=larder-agent \
    -addext basicConstraints=critical,CA:FALSE \
    -addext extendedKeyUsage=serverAuth \
    -addext subjectAltName=DNS:larder-agent,DNS:larder-agent-2,DNS:localhost,IP:127.0.0.1
  echo "serving-tls: made a self-signed certificate"
fi

# The key must be the certificate's, or the agent cannot serve HTTPS.
scratch=$(mktemp -d)
if ! openssl x509 -in "$new_certificate" -noout -pubkey >"$scratch/certificate.pub" \
  || ! openssl pkey -in "$new_key" -pubout >"$scratch/key.pub" \
  || ! cmp -s "$scratch/certificate.pub" "$scratch/key.pub"; then
  echo "serving-tls: $origin/tls.key is not the private key of $origin/tls.crt (both PEM, the key unencrypted)" >&2
  rm -rf "$scratch" "$certificate.tmp" "$key.tmp"
  exit 1
fi
rm -rf "$scratch"
chown 0:0 "$new_certificate"
chmod 0444 "$new_certificate"
chown "$agent:$agent" "$new_key"
chmod 0400 "$new_key"
if [ "$new_certificate" != "$certificate" ]; then
  mv "$new_key" "$key"
  mv "$new_certificate" "$certificate"
fi

openssl x509 -in "$certificate" -noout -subject -ext subjectAltName -enddate | sed 's/^/serving-tls: /'
if ! openssl x509 -in "$certificate" -noout -checkend $((30 * 24 * 3600)) >/dev/null; then
  echo "serving-tls: warning: $certificate expires within 30 days (docs/containers.md says how to replace it)" >&2
fi
