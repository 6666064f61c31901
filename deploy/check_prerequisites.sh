#!/usr/bin/env bash
# What `make demo` / `make test` need on the machine, checked before anything is installed, so a
# missing tool is named in one line instead of failing twenty minutes into the setup.
#
#   deploy/check_prerequisites.sh demo|test [python]
#
# demo: Python 3.11 or 3.12, Java 17+ (the broker), Maven 3.6+ (fetches the broker's jars).
# test: the same, plus Go 1.26+ (helm and kubeconform through `go install`) and apt-get with its
#       package lists (Debian's prometheus package, unpacked without root).
set -uo pipefail
target=${1:-demo}
python=${2:-python3}
missing=()

version_at_least() {  # version_at_least FOUND WANTED: true when FOUND >= WANTED (dotted numbers)
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

if py=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
  case "$py" in 3.11|3.12) ;; *) missing+=("Python 3.11 or 3.12 (found $py; set PYTHON=python3.11)") ;; esac
else
  missing+=("Python 3.11 or 3.12 ($python not found; set PYTHON=...)")
fi

if command -v java >/dev/null; then
  java_version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9.]*\).*/\1/p' | head -n1)
  version_at_least "${java_version:-0}" 17 || missing+=("Java 17+ (found ${java_version:-unknown})")
else
  missing+=("Java 17+ (e.g. apt-get install openjdk-17-jre-headless)")
fi

if command -v mvn >/dev/null; then
  mvn_version=$(mvn -v 2>/dev/null | sed -n 's/.*Apache Maven \([0-9][0-9.]*\).*/\1/p' | head -n1)
  version_at_least "${mvn_version:-0}" 3.6 || missing+=("Maven 3.6+ (found ${mvn_version:-unknown})")
else
  missing+=("Maven 3.6+ (e.g. apt-get install maven)")
fi

if [ "$target" = test ]; then
  if command -v go >/dev/null; then
    go_version=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
    version_at_least "${go_version:-0}" 1.26 || missing+=("Go 1.26+ for helm and kubeconform (found ${go_version:-unknown})")
  else
    missing+=("Go 1.26+ (installs helm and kubeconform through the module proxy)")
  fi
  if ! command -v apt-get >/dev/null; then
    missing+=("apt-get (Debian's prometheus package for the monitoring tests)")
  elif ! apt-cache show prometheus >/dev/null 2>&1; then
    missing+=("apt's package lists with prometheus (run: apt-get update)")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '%s; ' "${missing[@]}")
  echo "make $target needs: ${joined%; }" >&2
  exit 1
fi
