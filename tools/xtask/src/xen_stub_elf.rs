//! The minimal Xen PV kernel for `bench xen-boot`: a generated 64-bit ELF that does
//! only what any PV domU must do to print one line and end — the Xen ELF notes, the
//! console ring page found through start_info and the M2P table, one line written to
//! the ring, `EVTCHNOP_send` on the console event channel, a wait (`SCHEDOP_yield`) until
//! xenconsoled has drained the ring, and `SCHEDOP_shutdown(poweroff)`. It measures what
//! the toolstack and Xen cost to create and start a domain, which every image pays, so
//! Upcall's `hello` against it isolates what Upcall adds.
//!
//! Layout (`VIRT_BASE` 0, so virtual = pseudo-physical, as for Upcall's images): code at
//! 1 MiB, the hypercall page (filled in by Xen) at +4 KiB, data (message, hypercall
//! arguments, the notes) at +8 KiB, a 4 KiB stack (bss) at +12 KiB. The ABI facts come
//! from the Xen backend's own `abi` module (Xen's public headers, through xen-sys).

/// The Xen ABI, shared with the backend (a pure module: `core` and `xen_sys` only).
#[path = "../../../xen/src/abi.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the stub uses a few of the backend's ABI items"
)]
mod abi;

/// Virtual (= pseudo-physical) load address of the code.
const BASE: u64 = 0x10_0000;
const PAGE: u64 = 0x1000;
/// The hypercall page: Xen writes a 32-byte stub per hypercall number.
const HYPERCALL_PAGE: u64 = BASE + PAGE;
const DATA: u64 = BASE + 2 * PAGE;
const STACK_TOP: u64 = BASE + 4 * PAGE;
/// File offset of the loaded segment (headers fit below it).
const LOAD_OFFSET: u64 = PAGE;

/// The line it prints.
pub const MESSAGE: &[u8] = b"xen-boot-stub: hello from a minimal PV kernel\n";

/// Hypercall numbers and operations (`public/xen.h`, `sched.h`, `event_channel.h`).
const HYPERVISOR_SCHED_OP: u64 = abi::__HYPERVISOR_sched_op as u64;
const HYPERVISOR_EVENT_CHANNEL_OP: u64 = abi::__HYPERVISOR_event_channel_op as u64;
const SCHEDOP_YIELD: u32 = abi::SCHEDOP_yield;
const SCHEDOP_SHUTDOWN: u32 = abi::SCHEDOP_shutdown;
const EVTCHNOP_SEND: u32 = abi::EVTCHNOP_send;
/// `start_info` offsets (64-bit): `console.domU.mfn` and `console.domU.evtchn` (one
/// byte displacements in the code).
const SI_CONSOLE_MFN: u8 = abi::si::CONSOLE_MFN as u8;
const SI_CONSOLE_EVTCHN: u8 = abi::si::CONSOLE_EVTCHN as u8;
/// `struct xencons_interface`: `out`, `out_cons`, `out_prod`.
const RING_OUT: u32 = std::mem::offset_of!(abi::xencons_interface, out) as u32;
const RING_OUT_SIZE: u32 = abi::XENCONS_OUT_SIZE as u32;
const RING_OUT_CONS: u32 = std::mem::offset_of!(abi::xencons_interface, out_cons) as u32;
const RING_OUT_PROD: u32 = std::mem::offset_of!(abi::xencons_interface, out_prod) as u32;
/// Xen's read-only machine-to-phys table in every 64-bit PV guest.
const M2P: u64 = abi::MACH2PHYS_VIRT_START;

/// x86-64 machine code with backward jumps patched by label.
struct Code(Vec<u8>);

impl Code {
    fn emit(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn imm32(&mut self, opcode: &[u8], v: u64) -> &mut Self {
        let v = u32::try_from(v).expect("below 4 GiB");
        self.emit(opcode).emit(&v.to_le_bytes())
    }
    fn here(&self) -> usize {
        self.0.len()
    }
    /// A short jump (`opcode` rel8) to `target`, already emitted.
    fn jump_back(&mut self, opcode: u8, target: usize) -> &mut Self {
        let rel = i8::try_from(target as isize - (self.here() as isize + 2)).expect("short jump");
        self.emit(&[opcode, rel as u8])
    }
    /// A short forward jump; returns where to patch it with [`Code::land`].
    fn jump_forward(&mut self, opcode: u8) -> usize {
        self.emit(&[opcode, 0]);
        self.here()
    }
    fn land(&mut self, from: usize) {
        self.0[from - 1] = u8::try_from(self.here() - from).expect("short jump");
    }
    /// `mov eax, HYPERCALL_PAGE + 32 * op; call rax` (the stub clobbers rcx, r11 and
    /// the argument registers; rbx, r12, r13 survive).
    fn hypercall(&mut self, op: u64) -> &mut Self {
        self.imm32(&[0xb8], HYPERCALL_PAGE + 32 * op)
            .emit(&[0xff, 0xd0])
    }
}

/// Data addresses: the message, then the `EVTCHNOP_send` port, then the
/// `sched_shutdown` reason.
const MSG: u64 = DATA;
const PORT: u64 = DATA + 0x100;
const REASON: u64 = DATA + 0x104;
const NOTES: u64 = DATA + 0x200;

/// The entry: rsi = start_info (virtual), 64-bit, ring 3 (PV).
fn code() -> Vec<u8> {
    let mut c = Code(Vec::new());
    c.emit(&[0xfc]) // cld
        .imm32(&[0xbc], STACK_TOP) // mov esp, STACK_TOP
        .emit(&[0x48, 0x89, 0xf3]) // mov rbx, rsi (start_info)
        .emit(&[0x48, 0x8b, 0x43, SI_CONSOLE_MFN]) // mov rax, [rbx + console mfn]
        .emit(&[0x48, 0xb9])
        .emit(&M2P.to_le_bytes()) // mov rcx, M2P
        .emit(&[0x48, 0x8b, 0x04, 0xc1]) // mov rax, [rcx + rax*8] (pfn)
        .emit(&[0x48, 0xc1, 0xe0, 0x0c]) // shl rax, 12 (VIRT_BASE 0: va = pfn * 4096)
        .emit(&[0x49, 0x89, 0xc4]) // mov r12, rax (the ring)
        .imm32(&[0x45, 0x8b, 0xac, 0x24], u64::from(RING_OUT_PROD)) // mov r13d, [r12 + out_prod]
        .imm32(&[0xbe], MSG) // mov esi, MSG
        .imm32(&[0xb9], MESSAGE.len() as u64); // mov ecx, len
    // Invariant: at boot the ring is empty and the message is shorter than it, so
    // there is room for every byte without waiting for the backend.
    let copy = c.here();
    c.emit(&[0x0f, 0xb6, 0x06]) // movzx eax, byte [rsi]
        .emit(&[0x44, 0x89, 0xea]) // mov edx, r13d
        .imm32(&[0x81, 0xe2], u64::from(RING_OUT_SIZE - 1)) // and edx, size - 1
        .imm32(&[0x41, 0x88, 0x84, 0x14], u64::from(RING_OUT)) // mov [r12 + rdx + out], al
        .emit(&[0x41, 0xff, 0xc5]) // inc r13d
        .emit(&[0x48, 0xff, 0xc6]) // inc rsi
        .emit(&[0xff, 0xc9]) // dec ecx
        .jump_back(0x75, copy) // jnz copy
        .emit(&[0x0f, 0xae, 0xf8]) // sfence: the bytes before the index
        .imm32(&[0x45, 0x89, 0xac, 0x24], u64::from(RING_OUT_PROD)) // mov [r12 + out_prod], r13d
        .emit(&[0x8b, 0x43, SI_CONSOLE_EVTCHN]) // mov eax, [rbx + console evtchn]
        .imm32(&[0xbf], PORT) // mov edi, PORT
        .emit(&[0x89, 0x07]) // mov [rdi], eax
        .emit(&[0x89, 0xfe]) // mov esi, edi
        .imm32(&[0xbf], u64::from(EVTCHNOP_SEND)) // mov edi, EVTCHNOP_send
        .hypercall(HYPERVISOR_EVENT_CHANNEL_OP);
    // Wait until xenconsoled has consumed everything (else the line dies with us).
    let wait = c.here();
    c.imm32(&[0x41, 0x8b, 0x84, 0x24], u64::from(RING_OUT_CONS)) // mov eax, [r12 + out_cons]
        .emit(&[0x44, 0x39, 0xe8]); // cmp eax, r13d
    let drained = c.jump_forward(0x74); // je drained
    c.imm32(&[0xbf], u64::from(SCHEDOP_YIELD)) // mov edi, SCHEDOP_yield
        .emit(&[0x31, 0xf6]) // xor esi, esi
        .hypercall(HYPERVISOR_SCHED_OP)
        .jump_back(0xeb, wait); // jmp wait
    c.land(drained);
    c.imm32(&[0xbf], REASON) // mov edi, REASON
        .emit(&[0xc7, 0x07])
        .emit(&abi::SHUTDOWN_poweroff.to_le_bytes()) // mov dword [rdi], SHUTDOWN_poweroff
        .emit(&[0x89, 0xfe]) // mov esi, edi
        .imm32(&[0xbf], u64::from(SCHEDOP_SHUTDOWN)) // mov edi, SCHEDOP_shutdown
        .hypercall(HYPERVISOR_SCHED_OP);
    let hang = c.here();
    c.jump_back(0xeb, hang); // shutdown does not return
    c.0
}

/// One ELF note named "Xen".
fn note(ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(4u32.to_le_bytes());
    n.extend((desc.len() as u32).to_le_bytes());
    n.extend(ty.to_le_bytes());
    n.extend(b"Xen\0");
    n.extend(desc);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

/// The Xen notes (`public/elfnote.h`): what libxenguest's loader requires of a PV
/// kernel (generic loader, xen-3.0) and where to enter it.
fn notes() -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(note(abi::XEN_ELFNOTE_GUEST_OS, b"xen-boot-stub\0"));
    n.extend(note(abi::XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
    n.extend(note(abi::XEN_ELFNOTE_LOADER, b"generic\0"));
    n.extend(note(abi::XEN_ELFNOTE_VIRT_BASE, &0u64.to_le_bytes()));
    n.extend(note(abi::XEN_ELFNOTE_PADDR_OFFSET, &0u64.to_le_bytes()));
    n.extend(note(abi::XEN_ELFNOTE_ENTRY, &BASE.to_le_bytes()));
    n.extend(note(
        abi::XEN_ELFNOTE_HYPERCALL_PAGE,
        &HYPERCALL_PAGE.to_le_bytes(),
    ));
    n.extend(note(
        abi::XEN_ELFNOTE_FEATURES,
        b"!writable_page_tables|pae_pgdir_above_4gb\0",
    ));
    n
}

/// Builds the image.
pub fn image() -> Vec<u8> {
    let code = code();
    assert!(code.len() as u64 <= PAGE, "the code fits its page");
    let notes = notes();
    // The loaded segment, from BASE: code, hypercall page, data page (message, port,
    // reason, notes); the stack page is bss.
    let mut load = code;
    load.resize(PAGE as usize, 0xcc);
    load.resize(2 * PAGE as usize, 0xcc);
    load.extend(MESSAGE);
    load.resize((NOTES - BASE) as usize, 0);
    load.extend(&notes);
    let filesz = load.len() as u64;
    let memsz = STACK_TOP - BASE;

    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(BASE.to_le_bytes()); // e_entry
    elf.extend(64u64.to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 2, 64, 0, 0] {
        elf.extend(v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let phdr = |elf: &mut Vec<u8>, ty: u32, flags: u32, addr: u64, filesz: u64, memsz: u64| {
        elf.extend(ty.to_le_bytes());
        elf.extend(flags.to_le_bytes());
        elf.extend((LOAD_OFFSET + addr - BASE).to_le_bytes()); // offset
        elf.extend(addr.to_le_bytes()); // vaddr
        elf.extend(addr.to_le_bytes()); // paddr
        elf.extend(filesz.to_le_bytes());
        elf.extend(memsz.to_le_bytes());
        elf.extend(if ty == 1 { PAGE } else { 4 }.to_le_bytes()); // align
    };
    phdr(&mut elf, 1, 7, BASE, filesz, memsz); // PT_LOAD, rwx
    phdr(
        &mut elf,
        4,
        4,
        NOTES,
        notes.len() as u64,
        notes.len() as u64,
    ); // PT_NOTE
    elf.resize(LOAD_OFFSET as usize, 0);
    elf.extend(load);
    elf
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSegment};

    #[test]
    fn is_a_pv_elf_with_notes_message_and_room() {
        let elf = super::image();
        let file = object::File::parse(&*elf).expect("parses");
        assert_eq!(file.entry(), super::BASE);
        let seg = file.segments().next().expect("a PT_LOAD");
        assert_eq!(seg.address(), super::BASE);
        let data = seg.data().expect("in the file");
        assert_eq!(
            &data[(super::MSG - super::BASE) as usize..][..super::MESSAGE.len()],
            super::MESSAGE
        );
        assert!(super::MESSAGE.len() < super::RING_OUT_SIZE as usize);
        for needle in [&b"generic\0"[..], b"xen-3.0\0", b"Xen\0"] {
            assert!(elf.windows(needle.len()).any(|w| w == needle));
        }
        // The hypercall page is page-aligned and left for Xen to fill.
        let hp = (super::HYPERCALL_PAGE - super::BASE) as usize;
        assert!(data[hp..hp + 4096].iter().all(|&b| b == 0xcc));
    }
}
