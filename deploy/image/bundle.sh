#!/bin/sh
# bundle.sh BINARY DIR: copies BINARY with its dynamic loader and every shared library it needs into
# DIR (DIR/trustwatch, DIR/ld.so, DIR/lib/), so that it runs on an image without glibc (CloudCore's
# is Alpine):  DIR/ld.so --library-path DIR/lib DIR/trustwatch check ...
# Used by install.sh in the image build, and by tests/deploy.rs on the binary the tests use.
set -eu
bin=$1
dir=$2
mkdir -p "$dir/lib"
cp "$bin" "$dir/trustwatch"
chmod 0755 "$dir/trustwatch"
# ldd prints "name => /path (addr)" for libraries and "/path/ld-linux-*.so.* (addr)" for the loader.
ldd "$bin" | while read -r first second third _; do
    case "$second" in
        "=>") lib=$third ;;
        *) lib=$first ;;
    esac
    case "$lib" in
        /*) ;;
        *) continue ;;
    esac
    case "$(basename "$lib")" in
        ld-linux*|ld64*) cp -L "$lib" "$dir/ld.so"; chmod 0755 "$dir/ld.so" ;;
        *) cp -L "$lib" "$dir/lib/" ;;
    esac
done
test -x "$dir/ld.so" || { echo "bundle.sh: no dynamic loader found for $bin" >&2; exit 1; }
