#!/usr/bin/env bash
# Runs inside cross's build images before the build: what librdkafka's and OpenSSL's source
# builds need beyond the images' compilers.
set -euo pipefail
missing=()
for tool in perl make; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
