//! The do-nothing reference image for `bench boot`: a PVH ELF whose first instruction
//! exits QEMU through isa-debug-exit. It measures the VMM's own start-up and tear-down,
//! which every image pays, so `hello / stub` isolates what Upcall adds.

/// Load (and entry) address.
const BASE: u32 = 0x10_0000;

/// Builds the image: ELF header, one PT_LOAD (code) and one PT_NOTE (the PVH entry).
pub fn do_nothing_image() -> Vec<u8> {
    // 32-bit code: mov al, 0 ; out 0xf4, al ; 1: hlt ; jmp 1b
    let code: [u8; 7] = [0xb0, 0x00, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd];
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend(v.to_le_bytes()); // namesz, descsz, type = XEN_ELFNOTE_PHYS32_ENTRY
    }
    note.extend(b"Xen\0");
    note.extend(BASE.to_le_bytes());

    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let code_off = EHDR + 2 * PHDR;
    let note_off = code_off + 8; // 4-byte aligned
    let mut elf = Vec::new();
    // e_ident: ELF64, little endian, version 1, System V.
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(u64::from(BASE).to_le_bytes()); // e_entry
    elf.extend((EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    for v in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        elf.extend(v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let phdr = |elf: &mut Vec<u8>, ty: u32, flags: u32, off: usize, len: usize, align: u64| {
        elf.extend(ty.to_le_bytes());
        elf.extend(flags.to_le_bytes());
        elf.extend((off as u64).to_le_bytes());
        let addr = u64::from(BASE) + (off - code_off) as u64;
        elf.extend(addr.to_le_bytes()); // vaddr
        elf.extend(addr.to_le_bytes()); // paddr
        elf.extend((len as u64).to_le_bytes()); // filesz
        elf.extend((len as u64).to_le_bytes()); // memsz
        elf.extend(align.to_le_bytes());
    };
    phdr(&mut elf, 1, 5, code_off, code.len(), 16); // PT_LOAD, R+X
    phdr(&mut elf, 4, 4, note_off, note.len(), 4); // PT_NOTE
    elf.extend(code);
    elf.resize(note_off, 0);
    elf.extend(note);
    elf
}

#[cfg(test)]
mod tests {
    use object::Object;

    #[test]
    fn is_a_valid_elf_with_the_pvh_note() {
        let elf = super::do_nothing_image();
        let file = object::File::parse(&*elf).expect("parses");
        assert_eq!(file.entry(), 0x10_0000);
        assert!(elf.windows(4).any(|w| w == b"Xen\0"));
    }
}
