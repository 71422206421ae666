//! virtio-mmio devices announced on the kernel command line (pure; host-tested).
//!
//! QEMU's `-M microvm` has no device tree or ACPI for us: it appends one word
//! `virtio_mmio.device=<size>@<base>:<irq>` per virtio-mmio transport with a device
//! plugged in to the command line (unless `auto-kernel-cmdline=off`), the syntax Linux
//! understands. The words are appended at the end, so they are taken from the end,
//! before libos splits the rest into options and app arguments (a `--` in the user's
//! text would otherwise hand them to the app).
#![forbid(unsafe_code)]

/// The prefix QEMU uses.
pub const PREFIX: &str = "virtio_mmio.device=";

/// One announced transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MmioDevice {
    /// Physical address of its registers.
    pub base: u64,
    /// Bytes of its register window.
    pub size: u64,
    /// Its interrupt line (GSI).
    pub irq: u32,
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `<size>[K|M|G]@<base>:<irq>`.
pub fn parse(spec: &str) -> Option<MmioDevice> {
    let (size, rest) = spec.split_once('@')?;
    let (base, irq) = rest.split_once(':')?;
    let (digits, shift) = match size.as_bytes().last()? {
        b'k' | b'K' => (&size[..size.len() - 1], 10),
        b'm' | b'M' => (&size[..size.len() - 1], 20),
        b'g' | b'G' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = number(digits)?.checked_mul(1 << shift)?;
    Some(MmioDevice {
        base: number(base)?,
        size,
        irq: irq.parse().ok()?,
    })
}

/// Takes trailing `virtio_mmio.device=` words off `cmdline`: returns the rest and
/// fills `out` (in command-line order; extra devices beyond `out.len()` are dropped).
/// Words that do not parse stay with the command line, so libos reports them.
pub fn split<'a>(cmdline: &'a str, out: &mut [MmioDevice]) -> (&'a str, usize) {
    let mut rest = cmdline;
    let mut found = 0usize;
    let mut reversed = [MmioDevice::default(); 16];
    loop {
        let trimmed = rest.trim_end();
        let (head, last) = trimmed
            .rsplit_once(char::is_whitespace)
            .unwrap_or(("", trimmed));
        let Some(dev) = last.strip_prefix(PREFIX).and_then(parse) else {
            break;
        };
        if found < reversed.len() {
            reversed[found] = dev;
        }
        found += 1;
        rest = head;
    }
    let kept = found.min(reversed.len()).min(out.len());
    for (slot, dev) in out
        .iter_mut()
        .zip(reversed[..found.min(reversed.len())].iter().rev())
    {
        *slot = *dev;
    }
    (rest.trim_end(), kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn qemu_words_are_taken_from_the_end() {
        let mut devs = [MmioDevice::default(); 4];
        let line = "loglevel=debug -- a b virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=1K@0xfeb01000:13";
        let (rest, n) = split(line, &mut devs);
        assert_eq!(rest, "loglevel=debug -- a b");
        assert_eq!(n, 2);
        assert_eq!(
            devs[0],
            MmioDevice {
                base: 0xfeb0_0e00,
                size: 512,
                irq: 12
            }
        );
        assert_eq!(
            devs[1],
            MmioDevice {
                base: 0xfeb0_1000,
                size: 1024,
                irq: 13
            }
        );
    }

    #[test]
    fn other_words_stay() {
        let mut devs = [MmioDevice::default(); 2];
        assert_eq!(
            split("a virtio_mmio.device=junk", &mut devs),
            ("a virtio_mmio.device=junk", 0)
        );
        assert_eq!(split("", &mut devs), ("", 0));
        assert_eq!(split(" virtio_mmio.device=512@0x1000:5 ", &mut devs).1, 1);
        // Not at the end: the user's own word, left alone.
        assert_eq!(split("virtio_mmio.device=512@0x1000:5 x", &mut devs).1, 0);
        assert_eq!(parse("512@0x1000"), None);
        assert_eq!(parse("99999999999G@0:1"), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let mut devs = [MmioDevice::default(); 3];
            let (rest, n) = split(&s, &mut devs);
            prop_assert!(s.starts_with(rest));
            prop_assert!(n <= 3);
        }
    }
}
