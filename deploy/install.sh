#!/usr/bin/env bash
# Installs a Larder release on a Debian/Ubuntu-like host with systemd.
#
#   sudo ./install.sh                                   install the release folder this script sits in
#   sudo ./install.sh larder-0.1.0-linux-x86_64.tar.gz  install a release tarball (checked against the
#                                                       SHA256SUMS beside it, when there is one)
#
# Options:
#   --root DIR     install into another root (an image, a test folder); default /.
#                  DIR must hold etc/passwd and etc/group: users are created in them.
#   --prefix DIR   where binaries go; default /usr/local
#   --component C  which service this host runs: control, agent or all (default); only its
#                  unit is enabled and started
#   --no-enable    do not run systemctl at all
#   --start        also start the services (restart them when running), once configured
#
# What it does, each step idempotent (running it again, or reinstalling a version, is fine):
#   - system groups and users larder and larder-agent (no login, no home), when missing;
#   - the binaries in PREFIX/lib/larder/VERSION/bin/, and PREFIX/bin/{larder,larder-control,
#     larder-agent} as symlinks to them, each switched atomically (upgrades and rollbacks:
#     install the other release; earlier versions stay in PREFIX/lib/larder/);
#   - larder-control.service and larder-agent.service in /etc/systemd/system/;
#   - /etc/larder (root, 0755: a CA bundle there is readable to both services) with
#     control.env and agent.env (root, 0600; systemd reads them) written from a
#     template only when absent: an operator's files are never overwritten;
#   - /var/lib/larder-agent (larder-agent, 0700), where the agent is enrolled;
#   - systemctl daemon-reload and enable (on a running systemd, with --root /), else what to do next.
#
# Needs bash, coreutils, tar, gzip, sha256sum, useradd/groupadd (passwd) and, optionally, systemctl.
if [ -z "${BASH_VERSION:-}" ]; then
  echo "install.sh: run it with bash (sudo ./install.sh or sudo bash install.sh)" >&2
  exit 2
fi
set -euo pipefail
umask 022

binaries=(larder larder-control larder-agent)
units=(larder-control.service larder-agent.service)

step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<'EOF'
Usage: install.sh [TARBALL] [--root DIR] [--prefix DIR] [--component control|agent|all] [--no-enable] [--start]

Installs a Larder release: the folder this script sits in, or TARBALL
(verified against the SHA256SUMS beside it when there is one).

  --root DIR     install into another root (default /); DIR must hold etc/passwd and etc/group
  --prefix DIR   installation prefix (default /usr/local)
  --component C  the service this host runs: control, agent or all (default): only its unit is enabled
  --no-enable    do not run systemctl
  --start        also start (or restart) the services that are configured
  -h, --help     this text
EOF
}

tarball=""
root="/"
prefix="/usr/local"
enable=1
start=0
component=all
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --component) [ $# -ge 2 ] || die "--component needs control, agent or all"; component=$2; shift 2 ;;
    --component=*) component=${1#--component=}; shift ;;
    --no-enable) enable=0; shift ;;
    --start) start=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *)
      [ -z "$tarball" ] || die "only one tarball, please (got $tarball and $1)"
      tarball=$1; shift ;;
  esac
done

case "$component" in
  control) enabled_units=(larder-control.service) ;;
  agent) enabled_units=(larder-agent.service) ;;
  all) enabled_units=("${units[@]}") ;;
  *) die "--component takes control, agent or all (got $component)" ;;
esac
if [ "$start" = 1 ] && [ "$enable" = 0 ]; then
  die "--start and --no-enable contradict each other"
fi

# Creating users, and files owned by them, needs root, in another root too.
[ "$(id -u)" = 0 ] || die "run it as root (sudo $0 …): it creates system users and root-owned files"

# --- Where to install -------------------------------------------------------

# The prefix ends up in unit files' ExecStart lines: keep it to plain path characters.
case "$prefix" in
  /*) ;;
  *) die "--prefix must be an absolute path (got $prefix)" ;;
esac
if [[ ! "$prefix" =~ ^[A-Za-z0-9._/+-]+$ ]] || [[ "$prefix" == *..* ]]; then
  die "--prefix may only hold letters, digits and . _ / + - (got $prefix)"
fi
while [ "${#prefix}" -gt 1 ] && [ "${prefix%/}" != "$prefix" ]; do prefix=${prefix%/}; done

[ -d "$root" ] || die "--root $root is not a directory"
root=$(cd "$root" && pwd -P)
if [ "$root" = / ]; then
  r=""          # prepended to every installed path
else
  r=$root
  [ -f "$r/etc/passwd" ] && [ -f "$r/etc/group" ] ||
    die "$r has no etc/passwd or etc/group: --root must be a system root (seed those files, e.g. from a base image, first)"
fi

work=""
cleanup() { if [ -n "$work" ]; then rm -rf -- "$work"; fi; }
trap cleanup EXIT

# --- The release -------------------------------------------------------------

if [ -n "$tarball" ]; then
  [ -f "$tarball" ] || die "no such file: $tarball"
  tarball_dir=$(cd "$(dirname -- "$tarball")" && pwd -P)
  tarball_name=$(basename -- "$tarball")
  sums="$tarball_dir/SHA256SUMS"
  if [ -f "$sums" ]; then
    step "Checking $tarball_name against $sums"
    expected=""
    while IFS= read -r line || [ -n "$line" ]; do
      line=${line%$'\r'}
      hash=${line%% *}
      name=${line#* }
      name=${name#[ *]}
      if [ "$name" = "$tarball_name" ]; then expected=$hash; fi
    done < "$sums"
    [ -n "$expected" ] || die "$sums does not list $tarball_name: refusing to install an unverified tarball (remove SHA256SUMS to install it unchecked)"
    actual=$(sha256sum < "$tarball")
    actual=${actual%% *}
    if [ "${expected,,}" != "$actual" ]; then
      die "checksum mismatch for $tarball_name: SHA256SUMS says ${expected,,}, the file is $actual; nothing installed (download it again)"
    fi
    info "sha256 $actual: ok"
  else
    warn "no SHA256SUMS beside $tarball_name: its checksum is not verified"
  fi
  step "Extracting $tarball_name"
  work=$(mktemp -d "${TMPDIR:-/tmp}/larder-install.XXXXXX")
  tar -xzf "$tarball" -C "$work" --no-same-owner --no-same-permissions ||
    die "could not extract $tarball (not a gzipped tarball?)"
  shopt -s nullglob dotglob
  entries=("$work"/*)
  shopt -u nullglob dotglob
  if [ "${#entries[@]}" != 1 ] || [ ! -d "${entries[0]}" ]; then
    die "$tarball_name should hold one folder, larder-VERSION-linux-ARCH/"
  fi
  release=${entries[0]}
else
  release=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
fi

for b in "${binaries[@]}"; do
  if [ ! -f "$release/bin/$b" ] || [ ! -x "$release/bin/$b" ]; then
    die "$release is not a Larder release (no executable bin/$b); pass a release tarball, or build one with deploy/release/build"
  fi
done
for u in "${units[@]}"; do
  [ -f "$release/systemd/$u" ] || die "$release is not a complete release (no systemd/$u)"
done
[ -f "$release/VERSION" ] || die "$release is not a complete release (no VERSION file)"

version="" revision="" arch=""
while IFS='=' read -r key value || [ -n "$key" ]; do
  case "$key" in
    version) version=$value ;;
    revision) revision=$value ;;
    arch) arch=$value ;;
  esac
done < "$release/VERSION"
[[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]*$ ]] || die "$release/VERSION has no valid version= line"

host_arch=$(uname -m)
if [ -n "$arch" ] && [ "$arch" != "$host_arch" ]; then
  if [ -z "$r" ]; then
    die "this release is for $arch, this host is $host_arch"
  fi
  warn "this release is for $arch, this host is $host_arch (fine for an image of another architecture)"
fi

step "Installing Larder $version (revision ${revision:-unknown}, ${arch:-unknown arch}) into ${r:-/} with prefix $prefix"

# --- Users and groups --------------------------------------------------------

# Look names up in the target root's own files (with --root), or through NSS on this host.
lookup() { # lookup passwd|group NAME -> prints the numeric id, or nothing
  local db=$1 name=$2 entry n id
  if [ -z "$r" ]; then
    entry=$(getent "$db" "$name" || true)
    if [ -n "$entry" ]; then
      IFS=: read -r _ _ id _ <<< "$entry"
      printf '%s\n' "$id"
    fi
    return 0
  fi
  while IFS=: read -r n _ id _ || [ -n "$n" ]; do
    if [ "$n" = "$name" ]; then printf '%s\n' "$id"; return 0; fi
  done < "$r/etc/$db"
}

# groupadd/useradd, inside the target root with --root (they chroot into it and edit its
# etc/passwd, group, shadow and gshadow). A missing shell inside an image is only worth a note.
run_account_tool() {
  local err status=0
  err=$("$@" 2>&1 >/dev/null) || status=$?
  if [ "$status" != 0 ]; then
    printf '%s\n' "$err" >&2
    die "$1 failed (exit $status)"
  fi
  if [ -n "$err" ]; then
    while IFS= read -r line; do
      case "$line" in
        *"missing or non-executable shell"*) info "(/usr/sbin/nologin is not in ${r:-/} yet: fine while building an image)" ;;
        *) warn "$line" ;;
      esac
    done <<< "$err"
  fi
}

root_args=()
if [ -n "$r" ]; then root_args=(--root "$r"); fi

ensure_account() { # ensure_account NAME HOME COMMENT
  local name=$1 home=$2 comment=$3 gid uid
  gid=$(lookup group "$name")
  if [ -z "$gid" ]; then
    run_account_tool groupadd "${root_args[@]}" --system "$name"
    gid=$(lookup group "$name")
    [ -n "$gid" ] || die "groupadd did not create the group $name"
    info "group $name: created (gid $gid)"
  else
    info "group $name: exists (gid $gid)"
  fi
  uid=$(lookup passwd "$name")
  if [ -z "$uid" ]; then
    run_account_tool useradd "${root_args[@]}" --system --gid "$name" --no-create-home \
      --home-dir "$home" --shell /usr/sbin/nologin --comment "$comment" "$name"
    uid=$(lookup passwd "$name")
    [ -n "$uid" ] || die "useradd did not create the user $name"
    info "user $name: created (uid $uid, no login, home $home not created)"
  else
    info "user $name: exists (uid $uid)"
  fi
}

step "Users and groups"
ensure_account larder /nonexistent "Larder control plane"
ensure_account larder-agent /var/lib/larder-agent "Larder data-plane agent"
agent_uid=$(lookup passwd larder-agent)
agent_gid=$(lookup group larder-agent)

# --- Binaries and symlinks ---------------------------------------------------

versions_dir="$r$prefix/lib/larder"
target="$versions_dir/$version"
step "Binaries in $target/bin"
# Shared folders (PREFIX/bin, PREFIX/lib) are created when missing, never re-moded.
mkdir -p -- "$r$prefix/bin" "$r$prefix/lib"
install -d -m 0755 -o 0 -g 0 "$versions_dir" "$target" "$target/bin"
for b in "${binaries[@]}"; do
  # A fresh file renamed over the old one: a running process keeps its own copy.
  install -m 0755 -o 0 -g 0 "$release/bin/$b" "$target/bin/.$b.new.$$"
  mv -f -- "$target/bin/.$b.new.$$" "$target/bin/$b"
  info "$target/bin/$b"
done
install -m 0644 -o 0 -g 0 "$release/VERSION" "$target/.VERSION.new.$$"
mv -f -- "$target/.VERSION.new.$$" "$target/VERSION"

if [ -z "$r" ]; then
  # Check the new binaries run before pointing the commands at them.
  for b in "${binaries[@]}"; do
    out=$("$target/bin/$b" --version 2>&1) || die "$target/bin/$b --version failed: $out"
    case "$out" in
      "$version"|"$version "*) ;;
      *) die "$target/bin/$b --version printed '$out', expected $version" ;;
    esac
  done
  info "each prints its version ($version)"
fi

step "Commands in $r$prefix/bin"
for b in "${binaries[@]}"; do
  link="$r$prefix/bin/$b"
  if [ -d "$link" ] && [ ! -L "$link" ]; then
    die "$link is a directory; move it away and run this again"
  fi
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    info "$link was a plain file (an earlier manual install): replacing it with a symlink"
  fi
  # Relative, so the links also resolve inside an image root.
  ln -sfn -- "../lib/larder/$version/bin/$b" "$r$prefix/bin/.$b.new.$$"
  mv -fT -- "$r$prefix/bin/.$b.new.$$" "$link"
  info "$prefix/bin/$b -> ../lib/larder/$version/bin/$b"
done

# --- systemd units -----------------------------------------------------------

step "systemd units in $r/etc/systemd/system"
mkdir -p -- "$r/etc/systemd/system"
for u in "${units[@]}"; do
  new="$r/etc/systemd/system/.$u.new.$$"
  : > "$new"
  while IFS= read -r line || [ -n "$line" ]; do
    if [ "$prefix" != /usr/local ] && [[ "$line" == Exec* ]]; then
      line=${line//\/usr\/local\/bin\//$prefix/bin/}
    fi
    printf '%s\n' "$line" >> "$new"
  done < "$release/systemd/$u"
  chmod 0644 "$new"
  chown 0:0 "$new"
  dest="$r/etc/systemd/system/$u"
  if [ -f "$dest" ] && [ "$(cat -- "$dest")" = "$(cat -- "$new")" ]; then
    rm -f -- "$new"
    info "$u: unchanged"
  else
    existed=0
    [ -f "$dest" ] && existed=1
    mv -f -- "$new" "$dest"
    if [ "$existed" = 1 ]; then
      info "$u: updated (customize with drop-ins, systemctl edit $u, not by editing it)"
    else
      info "$u: installed"
    fi
  fi
done

# --- Configuration -----------------------------------------------------------

step "Configuration in $r/etc/larder"
# Readable to both services (a CA bundle, a certificate); what is secret has its own mode:
# the env files 0600 (systemd reads them as root), a TLS key root:larder 0640.
install -d -m 0755 -o 0 -g 0 "$r/etc/larder"
info "/etc/larder: root 0755"

write_env_template() { # write_env_template NAME (the template on stdin)
  local file="$r/etc/larder/$1" mode
  if [ -e "$file" ]; then
    cat > /dev/null
    mode=$(stat -c %a -- "$file")
    info "/etc/larder/$1: kept (exists, mode $mode)"
    case "$mode" in
      600|400) ;;
      *) warn "/etc/larder/$1 is mode $mode; it holds secrets: chmod 0600 it" ;;
    esac
    return 0
  fi
  (umask 077; cat > "$file.new.$$")
  chown 0:0 "$file.new.$$"
  chmod 0600 "$file.new.$$"
  mv -f -- "$file.new.$$" "$file"
  info "/etc/larder/$1: written from the template (root 0600)"
}

write_env_template control.env <<'EOF'
# larder-control's settings, read by systemd for larder-control.service.
# It holds the database password: keep it owned by root, mode 0600.
# Every setting is described in docs/operations.md ("The control plane").

# The registry database (required): replace the placeholder.
LARDER_DATABASE_URL=postgres://larder:CHANGE-ME@localhost:5432/larder

# Where the API listens: 127.0.0.1:7070 by default, 0.0.0.0:7070 on every interface.
LARDER_LISTEN=127.0.0.1:7070

# HTTPS: a PEM certificate chain and its private key. The service runs as the
# user larder: make them readable to it, e.g. root:larder, mode 0640.
#LARDER_TLS_CERTIFICATE=/etc/larder/tls/fullchain.pem
#LARDER_TLS_KEY=/etc/larder/tls/privkey.pem

#LARDER_LOG_LEVEL=info
# The first admin's token (make one with: larder-control token); without it,
# the first start prints a new one, once, to the journal.
#LARDER_BOOTSTRAP_TOKEN=
EOF

write_env_template agent.env <<'EOF'
# Secrets for larder-agent, read by systemd for larder-agent.service.
# Keep it owned by root, mode 0600.
#
# A connection in /var/lib/larder-agent/agent.yaml may take a secret from the
# agent's environment as ${NAME}, for example
#   connections:
#     rides_db:
#       postgres: postgres://reader:${RIDES_DB_PASSWORD}@db.internal:5432/rides?sslmode=require
# Define each such NAME here, one NAME=value a line:
#RIDES_DB_PASSWORD=
EOF

step "Agent data directory"
install -d -m 0700 -o "$agent_uid" -g "$agent_gid" "$r/var/lib/larder-agent"
chown "$agent_uid:$agent_gid" "$r/var/lib/larder-agent"
chmod 0700 "$r/var/lib/larder-agent"
info "/var/lib/larder-agent: larder-agent 0700"

others=()
shopt -s nullglob
for d in "$versions_dir"/*/; do
  d=${d%/}
  d=${d##*/}
  if [ "$d" != "$version" ]; then others+=("$d"); fi
done
shopt -u nullglob

# --- systemd -----------------------------------------------------------------

control_configured=1
if [[ "$(cat -- "$r/etc/larder/control.env")" == *CHANGE-ME* ]]; then control_configured=0; fi
agent_enrolled=0
if [ -f "$r/var/lib/larder-agent/agent.yaml" ]; then agent_enrolled=1; fi

systemd_done=0
if [ "$enable" = 1 ] && [ -z "$r" ] && [ -d /run/systemd/system ] && command -v systemctl > /dev/null; then
  step "systemd"
  systemctl daemon-reload
  info "systemctl daemon-reload"
  systemctl enable "${enabled_units[@]}"
  info "systemctl enable ${enabled_units[*]}"
  if [ "$start" = 1 ] && [ "$component" != agent ]; then
    if [ "$control_configured" = 1 ]; then
      systemctl restart larder-control.service
      info "systemctl restart larder-control.service"
    else
      warn "not starting larder-control: set LARDER_DATABASE_URL in /etc/larder/control.env first"
    fi
  fi
  if [ "$start" = 1 ] && [ "$component" != control ]; then
    if [ "$agent_enrolled" = 1 ]; then
      systemctl restart larder-agent.service
      info "systemctl restart larder-agent.service"
    else
      warn "not starting larder-agent: enroll it first (below)"
    fi
  fi
  systemd_done=1
fi

# --- What next ---------------------------------------------------------------

step "Installed Larder $version"
if [ "${#others[@]}" -gt 0 ]; then
  info "other versions kept in $prefix/lib/larder: ${others[*]} (to switch to one, install its release again)"
fi
echo
echo "Next steps:"
if [ -n "$r" ]; then
  echo "  (installed into $r: systemd was not touched; inside that system, run"
  echo "   systemctl daemon-reload, or enable the units offline with systemctl --root $r enable ${enabled_units[*]})"
elif [ "$systemd_done" = 0 ]; then
  if [ "$enable" = 0 ]; then
    echo "  (--no-enable: systemd was not touched)"
  else
    echo "  (systemd is not running here: nothing was enabled)"
  fi
  echo "  systemctl daemon-reload"
fi
# What to run next for unit $1, given whether it is ready to start ($2: configured, enrolled).
next_step() {
  if [ "$systemd_done" = 1 ] && [ "$start" = 1 ] && [ "$2" = 1 ]; then
    echo "    $1 is (re)started: systemctl status $1.service"
  elif [ "$systemd_done" = 1 ]; then
    echo "    systemctl restart $1.service"
  else
    echo "    systemctl enable --now $1.service"
  fi
}
if [ "$component" != agent ]; then
  echo "  On a control-plane host:"
  if [ "$control_configured" = 0 ]; then
    echo "    edit /etc/larder/control.env: LARDER_DATABASE_URL (and LARDER_LISTEN, TLS), then"
  fi
  next_step larder-control "$control_configured"
fi
if [ "$component" != control ]; then
  if [ "$agent_enrolled" = 1 ]; then
    echo "  On an agent host (this one is enrolled: /var/lib/larder-agent/agent.yaml exists):"
  else
    echo "  On an agent host, enroll the agent first (a token from: larder agents enroll-token):"
    echo "    sudo -u larder-agent $prefix/bin/larder-agent enroll --url https://CONTROL-PLANE --token lre_… --data-dir /var/lib/larder-agent"
    echo "    add its sources' connections to /var/lib/larder-agent/agent.yaml, their secrets to /etc/larder/agent.env, then"
  fi
  next_step larder-agent "$agent_enrolled"
fi
if [ "$systemd_done" = 1 ] && [ "$component" = all ]; then
  echo "  Both units are enabled: on a host that runs only one, install with --component control or --component agent."
fi
