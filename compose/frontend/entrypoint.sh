#!/bin/sh
# The frontend container's entrypoint: point nginx at the network's DNS server (Docker's
# 127.0.0.11, podman's aardvark-dns on the bridge gateway), so the gateway's address is looked up
# again when its container is recreated or scaled, then run nginx in the foreground as PID 1.
set -eu
ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)
case "${ns:-}" in
  "") ns=127.0.0.11 ;;
  *:*) ns="[$ns]" ;;
esac
echo "resolver $ns valid=10s ipv6=off;" > /tmp/resolver.conf
exec nginx -g 'daemon off;'
