#!/usr/bin/env bash
# What bench/run.sh and bench/gateway.sh need beyond the project's build dependencies
# (Debian 12): the broker, the HTTP server they start, and wrk, the HTTP load generator of
# bench/gateway.sh. Run as root (or through sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# nginx-light: the static files and `return` are all the API needs. The package may start a
# system nginx on port 80; run.sh never uses or touches it.
apt-get install -y -q --no-install-recommends nginx-light mosquitto wrk curl
