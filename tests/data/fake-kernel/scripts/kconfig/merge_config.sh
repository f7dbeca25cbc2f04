#!/bin/sh
# Fake merge_config.sh: -m -O DIR BASE FRAGMENT... appends the fragments to the base.
[ "$1" = -m ] && shift
[ "$1" = -O ] && { out=$2; shift 2; }
base=$1; shift
cat "$@" >> "$base"
