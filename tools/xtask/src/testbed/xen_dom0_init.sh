#!/bin/sh
# dom0 init of Upcall's Xen test bed (used by tools/xtask/src/testbed/dom0.rs).
export PATH=/usr/lib/xen-4.17/bin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
say() { echo "xen-testbed: $*"; }
# Ends QEMU with status (code << 1) | 1: isa-debug-exit at port 0xf4 = 244.
finish() {
    say "exit status $1"
    printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    say "cannot write to isa-debug-exit through /dev/port"
    poweroff -f
}
run() { "$@" || { say "failed: $*"; finish 125; }; }
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xenfs; do
    run insmod /modules/$m.ko
done
run mount -t xenfs xenfs /proc/xen
mkdir -p /var/lock /var/run/xen /var/log/xen/console /var/lib/xen /var/lib/xenstored
run xenstored
out=$(xen-init-dom0 2>&1) || { say "xen-init-dom0 failed: $out"; finish 125; }
run xenconsoled --log=guest --log-dir=/var/log/xen/console
# nap S: sleeps S seconds without starting a process (a read that times out on a FIFO
# nobody writes to), so that polling costs dom0 almost nothing.
mkfifo /tmp/never && exec 9<>/tmp/never
nap() { read -r -t "$1" -u 9 _; }
# A run with networking brings its bridge up (see xen_net.rs).
if [ -f /net.sh ]; then . /net.sh; fi
# create [-p] CFG: creates a domain and waits for its end; its output names the
# shutdown reason as xl does (`has shut down, reason code C`). The libvirt flavour of
# this dom0 replaces it (/libvirt.sh, see libvirt_xen.rs).
create() { xl create -F "$@"; }
if [ -f /libvirt.sh ]; then . /libvirt.sh; fi
# Prints what the domain wrote to its console since the last call.
pump() {
    [ -f "$log" ] || return 0
    size=$(stat -c %s "$log")
    if [ "$size" -gt "$shown" ]; then
        tail -c +$((shown + 1)) "$log" | head -c $((size - shown))
        shown=$size
    fi
}
# Runs the next pending action (`xl $actionK $name $actionK_args`) once the console
# shows its text `$actionK_when`; actions run in order, each at most once.
act() {
    [ "$next" -le "$actions" ] || return 0
    eval "cmd=\$action$next args=\$action${next}_args when=\$action${next}_when"
    grep -q -F "$when" "$log" 2>/dev/null || return 0
    say "xl $cmd $name $args"
    xl "$cmd" "$name" $args || say "xl $cmd failed"
    next=$((next + 1))
}
# Shows what a hung domain (directory $1) is doing: Xen's view of its event channels
# and vCPUs (debug keys `e` and `q`: `(XEN)` lines on Xen's serial console, which the
# test logs keep and `cargo xtask run` hides; `q` also raises VIRQ_DEBUG, on which an
# Upcall domain prints its scheduler's tasks), then every vCPU's registers and the
# kernel addresses on its stack (xenctx, with the kernel's System.map).
dump() {
    domid=$(xl domid "$name") || return 0
    say "Xen's event channels and vCPUs (debug keys e, q), and the domain's tasks:"
    xl debug-keys e
    xl debug-keys q
    nap 1
    pump
    xl pause "$name"
    for v in $(seq 0 $(($(xl vcpu-list "$name" | wc -l) - 2))); do
        say "vCPU $v of $name:"
        xenctx -s "$1/System.map" -k 0x100000 -a -S "$domid" "$v" 2>&1 | head -n 80
    done
}
# Runs the domain of directory $1 (`kernel`, xl config `cfg`, settings `env`: `name`,
# `timeout` in seconds, `stream` (1: show the console as it comes), `settle` (1: create
# paused, unpause once dom0 is done with it), `actions` and their `actionK*`) to its end, between the lines `domain NAME begins` and
# `domain NAME exit status N`; sets $code to N.
domain() {
    name=; timeout=300; stream=1; settle=0; actions=0; next=1
    . "$1/env"
    log=/var/log/xen/console/guest-$name.log
    say "domain $name begins"
    say "xl create $1/cfg:"
    cat "$1/cfg"
    rm -f /tmp/xl.rc /tmp/xl.out
    shown=0 first= timed_out=
    read up rest < /proc/uptime
    deadline=$((${up%.*} + timeout))
    if [ "$settle" = 1 ]; then
        # Created paused; unpaused once the toolstack's own work for it has ended, so
        # that dom0 is idle while the domain runs.
        (create -p "$1/cfg" > /tmp/xl.out 2>&1; echo $? > /tmp/xl.rc) &
        until xl list "$name" > /dev/null 2>&1 || [ -f /tmp/xl.rc ]; do nap 0.05; done
        nap 0.5
        created=$EPOCHREALTIME
        xl unpause "$name" || say "xl unpause failed"
    else
        created=$EPOCHREALTIME
        (create "$1/cfg" > /tmp/xl.out 2>&1; echo $? > /tmp/xl.rc) &
    fi
    while [ ! -f /tmp/xl.rc ]; do
        read up rest < /proc/uptime
        if [ "${up%.*}" -ge "$deadline" ]; then
            pump
            say "domain $name did not end within $timeout s; destroying it"
            dump "$1"
            xl destroy "$name" || say "xl destroy failed"
            timed_out=1
            break
        fi
        if [ -z "$first" ]; then
            # Until the first output only builtins run: a fine-grained, cheap poll.
            if [ -s "$log" ]; then first=$EPOCHREALTIME; else nap 0.002; fi
            continue
        fi
        if [ "$stream" = 1 ] || [ "$next" -le "$actions" ]; then
            pump
            act
            nap 0.2
        else
            # Nobody watches and nothing is left to do: builtins only, dom0 stays idle.
            nap 0.5
        fi
    done
    wait
    pump
    [ -s "$log" ] && [ -n "$(tail -c 1 "$log")" ] && echo
    reason=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' /tmp/xl.out | head -n 1)
    status=$(grep -a -o 'upcall: exit status [0-9]*' "$log" 2>/dev/null | tail -n 1 | sed 's/.* //')
    case "$reason" in
        0) what=poweroff; code=0 ;;
        1) what=reboot; code=125 ;;
        2) what=suspend; code=125 ;;
        3) what=crash; code=101 ;;
        4) what=watchdog; code=125 ;;
        "") what=; code=125 ;;
        *) what=unknown; code=125 ;;
    esac
    if [ -n "$status" ] && [ "$status" -le 255 ]; then code=$status; fi
    if [ -n "$timed_out" ]; then
        code=125
    elif [ -z "$what" ]; then
        say "xl create failed (status $(cat /tmp/xl.rc)):"
        cat /tmp/xl.out
    else
        say "domain $name shut down (reason code $reason, $what)"
    fi
    [ -n "$first" ] && say "domain $name timing: xl create at $created, first console output at $first"
    say "domain $name exit status $code"
}
# /domains lists the domains' directories, to run one after another.
code=125
for dir in $(cat /domains); do
    domain "$dir"
done
finish $code
