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
run libvirtd -d
tries=0
until virsh_ uri > /dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ]; then
        say "libvirtd does not answer on xen:///system"
        virsh_ uri
        finish 125
    fi
    nap 0.1
done
say "libvirtd answers: $(virsh_ version | grep -i 'running hypervisor')"
# create CFG: `virsh define`s the domain of the XML CFG (named $name) and starts it,
# then waits until libvirt reports it shut off; prints libvirt's state and reason, and
# the shutdown reason as xl would (`has shut down, reason code C`).
create() {
    if [ "$1" = -p ]; then
        echo "libvirt: creating a domain paused is not supported here"
        return 1
    fi
    say "libvirt: virsh define $1, virsh start $name" >&7
    virsh_ define "$1" || return 1
    virsh_ start "$name" || { virsh_ undefine "$name"; return 1; }
    while state=$(virsh_ domstate --reason "$name" 2>&1); do
        case "$state" in "shut off"*) break ;; esac
        nap 0.5
    done
    say "libvirt: domain $name $state" >&7
    virsh_ undefine "$name" > /dev/null
    case "$state" in
        "shut off (shutdown)") echo "libvirt: $name has shut down, reason code 0" ;;
        "shut off (crashed)") echo "libvirt: $name has shut down, reason code 3" ;;
        *) echo "libvirt: $name is $state"; return 1 ;;
    esac
}
