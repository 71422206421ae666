//! The do-nothing reference image for `bench boot`: an ELF that both KVM VMMs boot and
//! whose first instruction ends the VM, like Upcall images (PVH note for QEMU; HERMIT
//! note + 64-bit ELF entry for uhyve). It measures the VMM's own start-up and
//! tear-down, which every image pays, so `hello / do-nothing` isolates what Upcall adds.

/// Load address of the single PT_LOAD.
const BASE: u64 = 0x10_0000;

const EHDR: usize = 64;
const PHDR: usize = 56;
const PHNUM: usize = 3;

fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend((name.len() as u32).to_le_bytes());
    n.extend((desc.len() as u32).to_le_bytes());
    n.extend(ty.to_le_bytes());
    n.extend(name);
    n.resize(n.len().next_multiple_of(4), 0);
    n.extend(desc);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

/// Builds the image.
pub fn do_nothing_image() -> Vec<u8> {
    let code_off = EHDR + PHNUM * PHDR;
    let at = |off: usize| BASE + (off - code_off) as u64;
    // 32-bit PVH entry (QEMU): mov al, 0 ; out 0xf4, al ; 1: hlt ; jmp 1b
    let pvh: [u8; 7] = [0xb0, 0x00, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd];
    let uhyve_off = code_off + 8;
    let params_off = uhyve_off + 16;
    let params = at(params_off) as u32;
    // 64-bit uhyve entry: mov eax, &ExitParams{0} ; mov dx, 0x540 ; out dx, eax ; hlt ; jmp
    let mut uhyve = vec![0xb8];
    uhyve.extend(params.to_le_bytes());
    uhyve.extend([0x66, 0xba, 0x40, 0x05, 0xef, 0xf4, 0xeb, 0xfd]);
    let mut code = pvh.to_vec();
    code.resize(uhyve_off - code_off, 0);
    code.extend(&uhyve);
    code.resize(params_off - code_off + 4, 0); // ExitParams { arg: 0 }
    let hermit = note(b"HERMIT\0", 0x5a00, &[4]);
    let xen = note(b"Xen\0", 18, &(BASE as u32).to_le_bytes());
    let hermit_off = code_off + code.len().next_multiple_of(4);
    let xen_off = hermit_off + hermit.len();

    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(at(uhyve_off).to_le_bytes()); // e_entry: the 64-bit (uhyve) entry
    elf.extend((EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    for v in [EHDR as u16, PHDR as u16, PHNUM as u16, 64, 0, 0] {
        elf.extend(v.to_le_bytes());
    }
    let phdr = |elf: &mut Vec<u8>, ty: u32, flags: u32, off: usize, len: usize, align: u64| {
        elf.extend(ty.to_le_bytes());
        elf.extend(flags.to_le_bytes());
        elf.extend((off as u64).to_le_bytes());
        elf.extend(at(off).to_le_bytes()); // vaddr
        elf.extend(at(off).to_le_bytes()); // paddr
        elf.extend((len as u64).to_le_bytes()); // filesz
        elf.extend((len as u64).to_le_bytes()); // memsz
        elf.extend(align.to_le_bytes());
    };
    phdr(&mut elf, 1, 7, code_off, xen_off + xen.len() - code_off, 16); // PT_LOAD
    phdr(&mut elf, 4, 4, hermit_off, hermit.len(), 4); // PT_NOTE, first: uhyve reads it
    phdr(&mut elf, 4, 4, xen_off, xen.len(), 4); // PT_NOTE: the PVH entry
    elf.extend(code);
    elf.resize(hermit_off, 0);
    elf.extend(hermit);
    elf.extend(xen);
    elf
}

#[cfg(test)]
mod tests {
    use object::Object;

    #[test]
    fn is_a_valid_elf_with_both_entries() {
        let elf = super::do_nothing_image();
        let file = object::File::parse(&*elf).expect("parses");
        assert_eq!(file.entry(), 0x10_0000 + 8);
        assert!(elf.windows(4).any(|w| w == b"Xen\0"));
        assert!(elf.windows(7).any(|w| w == b"HERMIT\0"));
    }
}
