#!/usr/bin/env bash
# The test command. What the tests need beyond cargo is set up here:
# - Chromium for the HTML report checks (TAPEDECK_CHROMIUM names another);
# - PostgreSQL for the PostgreSQL capture-store tests: a throwaway cluster
#   on a free loopback port, stopped and deleted when the tests end
#   (TAPEDECK_TEST_PG=postgres://… uses a server of your own instead).
# - kubernetes-validate (PyPI, with its offline schemas) for the
#   deploy/kubernetes checks, installed into target/pydeps.
# - xmlschema (PyPI) and the JUnit schema that pytest's source distribution
#   carries (junit-10.xsd, the Jenkins xUnit schema GitLab and GitHub
#   reporters read too) for the --junit checks, into target/pydeps.
# - Third-party backends for the replay-fidelity tests (tests/thirdparty.sh:
#   Matrix Synapse from PyPI), installed into target/thirdparty.
# Missing Debian packages (chromium, postgresql) are installed as root or
# through sudo, kubernetes-validate with pip. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

. tests/postgres.sh
. tests/thirdparty.sh

need=()
if [ -z "${TAPEDECK_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  need+=(chromium)
fi
if [ -z "${TAPEDECK_TEST_PG:-}" ]; then
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  # The test server's TLS certificates are made with openssl.
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
fi
# Virtualenvs for the third-party backends.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "tests/run.sh: the tests need ${need[*]}; install the Debian package(s), or set" >&2
    echo "TAPEDECK_CHROMIUM / TAPEDECK_TEST_PG to ones you have, and run again" >&2
    exit 2
  fi
  echo "tests/run.sh: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# kubernetes-validate goes into target/pydeps, apart from the system's Python.
export PYTHONPATH="$PWD/target/pydeps${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "tests/run.sh: installing kubernetes-validate into target/pydeps" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target target/pydeps kubernetes-validate
fi

if ! python3 -c 'import xmlschema' >/dev/null 2>&1; then
  echo "tests/run.sh: installing xmlschema into target/pydeps" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target target/pydeps xmlschema==4.3.2
fi
export TAPEDECK_JUNIT_XSD="$PWD/target/pydeps/junit-10.xsd"
if [ ! -f "$TAPEDECK_JUNIT_XSD" ]; then
  echo "tests/run.sh: fetching junit-10.xsd from pytest's source distribution" >&2
  rm -rf target/pydeps-src
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary pytest \
    --dest target/pydeps-src pytest==8.3.4
  tar -xzf target/pydeps-src/pytest-8.3.4.tar.gz -O pytest-8.3.4/testing/example_scripts/junit-10.xsd \
    >"$TAPEDECK_JUNIT_XSD.part"
  echo "a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6  $TAPEDECK_JUNIT_XSD.part" | sha256sum --check --quiet
  mv "$TAPEDECK_JUNIT_XSD.part" "$TAPEDECK_JUNIT_XSD"
fi

install_thirdparty

if [ -z "${TAPEDECK_TEST_PG:-}" ]; then
  PG_EXTRA_OPTS="-c fsync=off" start_postgres
  export TAPEDECK_TEST_PG="$POSTGRES_URL" TAPEDECK_TEST_PG_CA="$POSTGRES_CA"
fi

cargo test --locked "$@"
