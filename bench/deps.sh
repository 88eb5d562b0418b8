#!/usr/bin/env bash
# What bench/run.sh needs beyond the project's build dependencies (Debian 12): the broker and
# the HTTP server it starts. Run as root (or through sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# nginx-light: the static files and `return` are all the API needs. The package may start a
# system nginx on port 80; run.sh never uses or touches it.
apt-get install -y -q --no-install-recommends nginx-light mosquitto
