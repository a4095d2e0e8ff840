#!/usr/bin/env bash
# The tree follows the one .clang-format (STYLE.md): every C file, one assertion each.
. "$(dirname "$0")/lib.sh"
cd "$TESSERA_SRC"
command -v clang-format >/dev/null || { skip "clang-format missing"; finish; exit; }
for f in $(git ls-files '*.c' '*.h' 2>/dev/null || find lib src include tests bench -name '*.[ch]'); do
        n=$(clang-format --dry-run "$f" 2>&1 | grep -c 'warning:')
        ok $((n != 0)) "$f is formatted ($n lines differ; run clang-format -i $f)"
done
finish
