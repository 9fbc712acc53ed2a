#!/bin/sh
# As the official image's: options alone ("--save", ...) are redis-server's.
set -eu
case "${1:-}" in
    -*) set -- redis-server "$@" ;;
esac
exec "$@"
