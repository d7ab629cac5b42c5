#!/bin/sh
# emguard image entrypoint: secrets from mounted files, then `emguard "$@"`.
#
# Why: compose `secrets:` and Kubernetes secret volumes hand a container files, and a
# password in a file is not in `docker inspect`, in the compose file or in the environment
# of every process started with it.  The engine itself reads EMGUARD_API_TOKENS_FILE; for
# the settings below it reads only the environment, so this script reads VAR_FILE into VAR
# (trailing newlines stripped) and unsets VAR_FILE.  Anything wrong - VAR and VAR_FILE both
# set, an unreadable or empty file - stops the container with a message naming the variable
# (never its value): an engine started without its broker or Redis password would retry
# forever, looking alive while it raised no alert.
set -eu

for var in EMGUARD_MQTT_PASSWORD EMGUARD_MQTT_PUBLISH_PASSWORD EMGUARD_REDIS; do
    eval "file=\${${var}_FILE:-}"
    [ -n "$file" ] || continue
    eval "current=\${${var}:-}"
    if [ -n "$current" ]; then
        echo "emguard-entrypoint: both $var and ${var}_FILE are set; set only one" >&2
        exit 64
    fi
    if [ ! -r "$file" ]; then
        echo "emguard-entrypoint: ${var}_FILE=$file is not a readable file" >&2
        exit 66
    fi
    value=$(cat "$file")
    if [ -z "$value" ]; then
        echo "emguard-entrypoint: ${var}_FILE=$file is empty" >&2
        exit 65
    fi
    export "$var=$value"
    unset "${var}_FILE"
done
unset file current value var

exec emguard "$@"
