# The libvirt flavour of the Xen test bed's dom0 (libvirt_xen.rs): sourced by the
# dom0 init (xen_dom0_init.sh) once the Xen daemons run. libvirtd's libxl driver
# defines and starts each domain from the libvirt XML in its `cfg` (as a fleet's
# management layer would), and libvirt says how it ended.
export PATH=$PATH:/usr/sbin:/usr/bin
mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt /etc/libvirt
virsh_() { virsh -q -c xen:///system "$@"; }
# The console, for lines from inside `create` (whose output goes to a file).
exec 7>&1
say "starting libvirtd (libxl driver)"
# Warnings and errors to a file, shown if libvirtd does not come up.
run env LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" libvirtd -d
tries=0
until virsh_ uri > /dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ] || ! pidof libvirtd > /dev/null; then
        say "libvirtd does not answer on xen:///system; its log:"
        tail -n 20 /var/log/libvirt/libvirtd.log
        finish 125
    fi
    nap 0.1
done
say "libvirtd answers: $(virsh_ version | grep -i 'running hypervisor')"
# One listener for every domain's lifecycle events, from here to the end; started
# from a subshell, so that it is no job of the init's (whose `wait` waits for a domain).
(virsh_ event --loop --event lifecycle > /tmp/virsh.events 2>&1 &)
# events_until TEXT: waits (at most 2 s) until libvirt's lifecycle events show TEXT.
events_until() {
    t=0
    until grep -q "$1" /tmp/virsh.events || [ "$t" -ge 20 ]; do
        nap 0.1
        t=$((t + 1))
    done
}
# create CFG: `virsh define`s the domain of the XML CFG (named $name) and starts it,
# then waits until libvirt reports it shut off; prints libvirt's lifecycle events
# (what Nova listens to), its state and reason, and the shutdown reason as xl would
# (`has shut down, reason code C`).
create() {
    if [ "$1" = -p ]; then
        echo "libvirt: creating a domain paused is not supported here"
        return 1
    fi
    say "libvirt: virsh define $1, virsh start $name" >&7
    virsh_ define "$1" || return 1
    # The listener may not have subscribed yet (the first domain): give it 2 s.
    events_until "'$name': Defined"
    if ! virsh_ start "$name"; then
        virsh_ undefine "$name"
        return 1
    fi
    while state=$(virsh_ domstate --reason "$name" 2>&1); do
        case "$state" in "shut off"*) break ;; esac
        nap 0.5
    done
    events_until "'$name': Stopped"
    list=$(sed -n "s/^event 'lifecycle' for domain '$name': //p" /tmp/virsh.events | tr '\n' ';')
    say "libvirt: domain $name events: $list" >&7
    say "libvirt: domain $name $state" >&7
    virsh_ undefine "$name" > /dev/null
    case "$state" in
        "shut off (shutdown)") echo "libvirt: $name has shut down, reason code 0" ;;
        "shut off (crashed)") echo "libvirt: $name has shut down, reason code 3" ;;
        *) echo "libvirt: $name is $state"; return 1 ;;
    esac
}
