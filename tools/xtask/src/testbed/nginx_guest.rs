//! The Linux guest of `cargo xtask bench net`: Debian's kernel with Debian 12's nginx
//! (keep-alive on, one worker: the guest has one vCPU) or busybox's `httpd` (kernel
//! command-line `upcall_server=busybox`) in an initramfs, serving the same files as
//! Upcall's `httpd`.
//!
//! Everything comes from Debian packages, fetched and unpacked by the Xen test bed's
//! functions (nothing is installed on the host); the archive is written by
//! [`crate::testbed::initramfs`] and cached, keyed on its inputs. The same kernel and initramfs
//! boot on QEMU (virtio-net-pci) and as a Xen xl domU (netfront): the init script loads
//! whichever card's driver finds a device.

use std::path::{Path, PathBuf};

use crate::testbed::debian::{ensure_debs, kernel_package, unpack};
use crate::testbed::files::{mkdir, only_file, read};
use crate::testbed::initramfs::{Fnv, Node, Tree};
use crate::{Failure, fail, host};

/// Bumped whenever the guest's layout changes, to rebuild the cached archive.
const FORMAT: &str = "nginx-guest-1";

/// The kernel command line's server choice (Linux hands unknown `name=value`
/// parameters to init as environment variables).
pub(crate) const BUSYBOX: &str = "upcall_server=busybox";

/// The guest's boot script: load the network driver, configure QEMU's user network the
/// way its DHCP would, serve `/www` with nginx (or busybox, see [`BUSYBOX`]).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# virtio-net on KVM, xen-netfront on Xen; the other card's modules find no device.
for m in failover net_failover virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_net xen-netfront; do
    [ -f /modules/$m.ko ] && /bin/busybox insmod /modules/$m.ko 2>/dev/null
done
n=0
until /bin/busybox ip link show eth0 >/dev/null 2>&1 || [ $n -ge 100 ]; do
    n=$((n + 1)); /bin/busybox usleep 50000
done
/bin/busybox ip link set lo up
/bin/busybox ip link set eth0 up
/bin/busybox ip addr add 10.0.2.15/24 dev eth0
/bin/busybox ip route add default via 10.0.2.2
/bin/busybox mkdir -p /run /tmp /var/log/nginx /var/lib/nginx
if [ "$upcall_server" = busybox ]; then
    echo "linux-guest: busybox httpd serving /www on port 80"
    exec /bin/busybox httpd -f -p 80 -h /www
fi
echo "linux-guest: nginx serving /www on port 80"
exec /usr/sbin/nginx -c /etc/nginx/nginx.conf
"#;

/// nginx's configuration: one worker (one vCPU), no access log, `sendfile`, keep-alive
/// without a request limit (as Upcall's `httpd`), the same content types.
const NGINX_CONF: &str = r#"daemon off;
master_process on;
worker_processes 1;
user root root;
pid /run/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 15s;
    keepalive_requests 1000000;
    types {
        text/html html;
        text/plain txt;
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    server {
        listen 80 backlog=4096;
        root /www;
    }
}
"#;

/// Packages whose files go into the guest besides the kernel: busybox, nginx and the
/// libraries nginx links (`Tree::check_libraries` fails if one is missing).
const PACKAGES: &[&str] = &[
    "busybox-static",
    "nginx",
    "libc6",
    "libcrypt1",
    "libpcre2-8-0",
    "libssl3",
    "zlib1g",
];

/// Kernel modules the guest loads (those Debian builds as modules), by file name, in
/// dependency order.
const MODULES: &[&str] = &[
    "failover.ko",
    "net_failover.ko",
    "virtio_ring.ko",
    "virtio.ko",
    "virtio_pci_legacy_dev.ko",
    "virtio_pci_modern_dev.ko",
    "virtio_pci.ko",
    "virtio_net.ko",
    "xen-netfront.ko",
];
/// The kernel package's files the guest needs (`tar` wildcards).
const KERNEL_FILES: &[&str] = &[
    "./boot/vmlinuz-*",
    "./lib/modules/*/kernel/drivers/virtio/*",
    "./lib/modules/*/kernel/drivers/net/virtio_net.ko",
    "./lib/modules/*/kernel/drivers/net/net_failover.ko",
    "./lib/modules/*/kernel/net/core/failover.ko",
    "./lib/modules/*/kernel/drivers/net/xen-netfront.ko",
];

/// The files every server serves (same bytes as Upcall's `httpd`): (URL path,
/// repository file). `/10m.bin` is generated (see [`upcall_tests::pattern`]).
pub(crate) const FILES: &[(&str, &str)] = &[
    ("/index.html", "apps/httpd/www/index.html"),
    ("/big.txt", "apps/httpd/www/big.txt"),
];

/// The Linux guest: (kernel, initramfs), assembled under `target/bench/linux-guest-3`.
pub(crate) fn build() -> Result<(PathBuf, PathBuf), Failure> {
    let mut packages = vec![kernel_package()?];
    packages.extend(PACKAGES.iter().map(|p| p.to_string()));
    let debs = ensure_debs(&packages)?;
    let mut key = Fnv::new();
    for part in [FORMAT, INIT, NGINX_CONF] {
        key.add(part.as_bytes());
    }
    for deb in &debs {
        key.add(deb.file_name().unwrap_or_default().as_encoded_bytes());
    }
    for (_, file) in FILES {
        key.add(&read(&host::root().join(file))?);
    }
    let dir = host::target_dir().join("bench/linux-guest-3");
    let initrd = dir.join(format!("initramfs-{:016x}.cpio", key.finish()));
    let kernel_dir = unpack(&debs[0], KERNEL_FILES)?;
    let kernel = only_file(&kernel_dir.join("boot"), "vmlinuz-")?;
    if initrd.is_file() {
        return Ok((kernel, initrd));
    }
    eprintln!("bench net: assembling the Linux guest (nginx, busybox) once");
    let mut t = Tree::default();
    for d in ["proc", "sys", "dev", "www", "run", "tmp"] {
        t.insert(d, Node::Dir);
    }
    t.insert("dev/console", Node::CharDev(5, 1));
    t.insert("init", Node::Data(INIT.as_bytes().to_vec(), 0o755));
    t.insert("bin/sh", Node::Symlink("busybox".into()));
    t.insert(
        "etc/nginx/nginx.conf",
        Node::Data(NGINX_CONF.as_bytes().to_vec(), 0o644),
    );
    // nginx looks its user up (getpwnam) even as root.
    t.insert(
        "etc/passwd",
        Node::Data(b"root:x:0:0:root:/root:/bin/sh\n".to_vec(), 0o644),
    );
    t.insert("etc/group", Node::Data(b"root:x:0:\n".to_vec(), 0o644));
    for (package, deb) in PACKAGES.iter().zip(&debs[1..]) {
        let unpacked = unpack(deb, &[])?;
        match *package {
            "busybox-static" => t.add_file(&unpacked, "bin/busybox")?,
            "nginx" => t.add_file(&unpacked, "usr/sbin/nginx")?,
            _ => t.add_tree(&unpacked, &|path: &str| {
                (path.starts_with("lib/")
                    || path.starts_with("lib64/")
                    || path.starts_with("usr/lib/x86_64-linux-gnu/"))
                    && !path.contains("/gconv/")
                    && !path.contains("/engines-3/")
                    && !path.contains("/ossl-modules/")
            })?,
        }
    }
    for (path, file) in FILES {
        t.insert(
            &format!("www{path}"),
            Node::File(host::root().join(file), 0o644),
        );
    }
    let mut generated = vec![0u8; upcall_tests::pattern::LEN];
    upcall_tests::pattern::fill(0, &mut generated);
    t.insert(
        &format!("www{}", upcall_tests::pattern::PATH),
        Node::Data(generated, 0o644),
    );
    for m in MODULES {
        if let Some(p) = find_file(&kernel_dir.join("lib/modules"), &|n| n == *m) {
            t.insert(&format!("modules/{m}"), Node::File(p, 0o644));
        }
    }
    t.check_libraries()?;
    mkdir(&dir)?;
    t.write(&initrd)?;
    // Archives of earlier inputs are garbage.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.path() != initrd {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if !initrd.is_file() {
        return fail(format!("bench net: {} was not written", initrd.display()));
    }
    Ok((kernel, initrd))
}

/// The first file under `dir` (recursively) whose name passes `want`.
fn find_file(dir: &Path, want: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, want) {
                return Some(found);
            }
        } else if want(&e.file_name().to_string_lossy()) {
            return Some(path);
        }
    }
    None
}
