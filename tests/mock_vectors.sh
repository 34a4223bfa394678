#!/bin/sh
# Computes the signatures pasted into tests/mock_api.rs, outside Rust, with
# OpenSSL: SIG = hex(HMAC-SHA256(SECRET, "POST\n" PATH "\n" NONCE "\n" BODY)).
# Usage: sh tests/mock_vectors.sh SECRET NONCE BODY
# printf's format turns \n into newlines; %s arguments are copied verbatim.
set -eu
secret=$1 nonce=$2 body=$3
printf 'POST\n%s\n%s\n%s' "/eapi/v0/identities/token/share" "$nonce" "$body" \
  | openssl dgst -sha256 -hmac "$secret" | awk '{print $NF}'
