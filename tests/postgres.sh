# Sourced by tests/run.sh and bench scripts: start_postgres starts a
# throwaway PostgreSQL cluster (Debian's server programs) on a free
# loopback port, sets POSTGRES_URL to its `postgres` database, and stops
# and deletes it when the calling shell exits. As root it runs the server
# as the `postgres` user, since initdb refuses root. The server also
# speaks TLS with a certificate for localhost and 127.0.0.1 signed by a
# throwaway CA, whose path is POSTGRES_CA (clients choose with sslmode).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
  local bin
  bin=$(pg_bin)
  if [ -z "$bin" ]; then
    echo "no PostgreSQL server programs under /usr/lib/postgresql; install Debian's postgresql package" >&2
    return 2
  fi
  PG_DIR=$(mktemp -d)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  PG_BIN=$bin
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$bin/initdb" -D "$PG_DIR/data" -U tapedeck -A trust --no-sync >/dev/null
  # A throwaway CA and the server's certificate signed by it.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=tapedeck-test-ca -keyout "$PG_DIR/ca.key" -out "$PG_DIR/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$PG_DIR/server.ext"
  openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.crt" -CAkey "$PG_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$PG_DIR/server.ext" -out "$PG_DIR/server.crt" 2>/dev/null
  chmod 600 "$PG_DIR/server.key"
  if [ "${#PG_AS[@]}" -gt 0 ]; then chown postgres "$PG_DIR/server.key" "$PG_DIR/server.crt"; fi
  trap stop_postgres EXIT
  "${PG_AS[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=200 \
        -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key ${PG_EXTRA_OPTS:-}" \
    start >/dev/null
  POSTGRES_CA="$PG_DIR/ca.crt"
  POSTGRES_URL="postgres://tapedeck@127.0.0.1:$port/postgres"
}

stop_postgres() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
