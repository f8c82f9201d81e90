#!/bin/sh
# SeaweedFS's image entrypoint, as the stand-in image needs it: the data of each server in
# /data unless a flag says otherwise, logs to standard error; anything else goes to weed.
set -eu

# Whether flag $1 is among the remaining arguments ("-dir" matches -dir=X and -dir X).
passed() {
    flag=$1
    shift
    for arg in "$@"; do
        case "$arg" in
            "$flag" | "$flag"=*) return 0 ;;
        esac
    done
    return 1
}

command=${1:-}
[ "$#" -gt 0 ] && shift
case "$command" in
    server)
        defaults="-dir=/data"
        passed -volume.max "$@" || defaults="$defaults -volume.max=0"
        # shellcheck disable=SC2086
        exec /usr/bin/weed -logtostderr=true server $defaults "$@" ;;
    master)
        exec /usr/bin/weed -logtostderr=true master -mdir=/data "$@" ;;
    volume)
        defaults="-dir=/data"
        passed -max "$@" || defaults="$defaults -max=0"
        # shellcheck disable=SC2086
        exec /usr/bin/weed -logtostderr=true volume $defaults "$@" ;;
    filer | s3)
        exec /usr/bin/weed -logtostderr=true "$command" "$@" ;;
    "")
        exec /usr/bin/weed ;;
    *)
        exec /usr/bin/weed "$command" "$@" ;;
esac
