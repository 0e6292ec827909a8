# Third-party backends the replay-fidelity tests run against, installed from
# the package registries into target/thirdparty (once; later runs reuse it).
# Sourced by tests/run.sh, which exports where each one is; the tests start
# and stop the servers themselves, on free loopback ports.
#
# - Matrix Synapse (PyPI): a real chat server. Token logins, server-made room
#   and event ids, client-made transaction ids (PUT), cursors in bodies,
#   filters with room ids inside; the events table says who sent what.
# - Radicale (PyPI): a CalDAV server. HTTP Basic auth, client-made UUIDs for
#   calendars and events (in paths and iCalendar bodies), ETag/If-Match
#   edits and deletes (412 when stale), ids inside XML queries; its storage
#   folder says whose calendars hold what.
# - Kinto (PyPI): a JSON storage server. Basic auth against its accounts,
#   server-made and client-made record ids, ETag/If-Match edits, a cursor
#   with a one-time nonce in a Next-Page header, ids inside in_id= lists;
#   its permissions say who wrote each object.

THIRDPARTY_DIR=${THIRDPARTY_DIR:-$PWD/target/thirdparty}
SYNAPSE_VERSION=1.163.2
RADICALE_VERSION=3.9.0
KINTO_VERSION=26.5.0

# install_venv DIR SPEC: a virtualenv holding SPEC, made once.
install_venv() {
  local dir=$1 spec=$2
  [ -f "$dir/.installed-$spec" ] && return 0
  echo "tests/thirdparty.sh: installing $spec into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec"
  touch "$dir/.installed-$spec"
}

install_thirdparty() {
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "tests/thirdparty.sh: python3 cannot make virtualenvs; install Debian's python3-venv" >&2
    return 2
  fi
  install_venv "$THIRDPARTY_DIR/synapse" "matrix-synapse==$SYNAPSE_VERSION"
  export TAPEDECK_SYNAPSE="$THIRDPARTY_DIR/synapse/bin/python"
  install_venv "$THIRDPARTY_DIR/radicale" "radicale==$RADICALE_VERSION"
  export TAPEDECK_RADICALE="$THIRDPARTY_DIR/radicale/bin/python"
  install_venv "$THIRDPARTY_DIR/kinto" "kinto==$KINTO_VERSION"
  export TAPEDECK_KINTO="$THIRDPARTY_DIR/kinto/bin/kinto"
}
