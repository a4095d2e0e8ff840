#!/usr/bin/env bash
# The application commands of the shell without a daemon: usage errors exit 2,
# bad values and an unreachable tesserad exit 1 with one "tessera: " line,
# --help and the Hobbes aliases, where launch's options end and the command's
# begin.  (apps.sh runs them against a real tesserad.)
. "$(dirname "$0")/lib.sh"
# No daemon here: lib.sh's cleanup would start one to destroy enclaves.
trap 'rm -rf "$T"' EXIT
export TESSERA_SOCKET=$T/nobody-listens.sock

# expect STATUS SUBSTRING DESCRIPTION CMD...: exit status STATUS and stderr saying SUBSTRING in one "tessera: " line
expect() {
        local want_rc=$1 want=$2 d=$3; shift 3
        local err rc
        err=$("$@" 2>&1 >/dev/null </dev/null); rc=$?
        local first=${err%%$'\n'*}
        if [ "$rc" -eq "$want_rc" ] && [[ "$first" == "tessera: "* && "$err" == *"$want"* ]]; then ok 0 "$d"; else
                echo "#   exit $rc (wanted $want_rc), wanted stderr saying: $want"
                printf '%s\n' "$err" | sed 's/^/#   /' | head -5
                ok 1 "$d"
        fi
}
usage() { expect 2 "$@"; }
fails() { expect 1 "$@"; }

for c in launch apps logs kill wait console cat write launch_app list_apps cat_file cat_into_file; do
        out=$(tessera "$c" --help); rc=$?
        [[ $rc -eq 0 && "$out" == "usage: tessera $c"* ]]; ok $? "$c --help prints its usage"
done
check "help lists the application commands" bash -c \
        'tessera help | grep -q "^  launch " && tessera help | grep -q "also: launch_app"'

usage "missing NAME" "launch without NAME" tessera launch
usage "missing the command" "launch without a command" tessera launch sim
usage "missing the command" "launch with nothing after --" tessera launch sim --
usage "missing the command" "launch -w NAME without a command" tessera launch -w sim
usage "option '--bogus' is not known" "launch with an unknown option" tessera launch sim --bogus -- true
usage "option '--cwd' needs a value" "launch --cwd without a value" tessera launch sim --cwd
usage "--name given twice" "launch --name twice" tessera launch sim -n a -n b -- true
fails "is not an enclave name" "launch refuses a bad enclave name" tessera launch 'a/b' -- true
fails "is not an application name" "launch refuses a bad application name" tessera launch sim -n 'x y' -- true
fails 'cpus: "3-1" is not a cpu list' "launch refuses a backwards cpu list" tessera launch sim --cpus 3-1 -- true
fails 'env: "1X=2" is not NAME=VALUE' "launch refuses a bad --env" tessera launch sim -e 1X=2 -- true
fails 'env: "X" is not NAME=VALUE' "launch refuses --env without =" tessera launch sim --env X -- true

# Options after the command are the command's: here --help reaches for the daemon instead of printing ours.
fails "cannot reach tesserad" "options after the command are the command's" tessera launch sim ls --help
out=$(tessera launch sim --help); check_eq "options between NAME and the command are launch's" 0 $?
fails "cannot reach tesserad" "launch without a daemon fails at once" tessera launch sim -- true
fails "cannot reach tesserad" "launch --wait without a daemon fails at once" \
        timeout 10 "$TESSERA_BIN" launch -w sim -- true
fails "cannot reach tesserad" "launch --wait copes with closed stdio" \
        timeout 10 bash -c 'exec <&- >&-; "$TESSERA_BIN" launch -w sim -- true'

usage "missing APP" "kill without APP" tessera kill sim
usage "unexpected argument 'x'" "kill with an extra argument" tessera kill sim a1 x
usage "unknown signal 'FOO'" "kill refuses an unknown signal" tessera kill sim a1 --signal FOO
usage "unknown signal '0'" "kill refuses signal 0" tessera kill sim a1 -s 0
usage "unknown signal '65'" "kill refuses signal 65" tessera kill sim a1 -s 65
for s in TERM SIGKILL int Hup USR1 9 RTMIN+1; do
        fails "cannot reach tesserad" "kill takes signal $s" tessera kill sim a1 --signal "$s"
done
fails "is not an application name" "kill refuses a bad application name" tessera kill sim 'a b'

usage "missing NAME" "wait without arguments" tessera wait
usage "missing APP" "wait without APP" tessera wait sim
fails "cannot reach tesserad" "wait without a daemon" tessera wait sim a1
usage "missing APP" "logs without APP" tessera logs sim
usage "option '--bogus' is not known" "logs with an unknown option" tessera logs sim a1 --bogus
fails "cannot reach tesserad" "logs --follow without a daemon" timeout 10 "$TESSERA_BIN" logs sim a1 --follow
usage "unexpected argument 'b'" "apps takes one NAME at most" tessera apps a b
fails "is not an enclave name" "apps refuses a bad enclave name" tessera apps 'a/b'
fails "cannot reach tesserad" "apps without a daemon" tessera list_apps
usage "missing NAME" "console without NAME" tessera console
fails "cannot reach tesserad" "console without a daemon" tessera console sim

usage "missing PATH" "cat without PATH" tessera cat sim
usage "'12Q' is not a size" "cat --max takes a size" tessera cat sim /x --max 12Q
usage "PATH is empty" "write refuses an empty PATH" tessera write sim ''
fails "cannot reach tesserad" "cat_file without a daemon" tessera cat_file sim /etc/hostname
head -c 2048 /dev/zero >"$T/2k"
# A regular file as input says its size: refused before any daemon is asked (and the target truncated).
out=$(tessera write sim /x --max 1K <"$T/2k" 2>&1); rc=$?
[[ $rc -eq 1 && "$out" == "tessera: input is larger than 1K (use --max); /x is unchanged" ]]
ok $? "write refuses input larger than --max before asking tesserad"
out=$(tessera cat_into_file sim /x --max 2K <"$T/2k" 2>&1); rc=$?
[[ $rc -eq 1 && "$out" == *"cannot reach tesserad"* ]]; ok $? "input of exactly --max goes on to tesserad"
finish
