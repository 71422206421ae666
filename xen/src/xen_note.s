/* XEN_NOTE type, payload: one ELF note named "Xen" (Xen's public/elfnote.h) in
   .note.Xen, whose descriptor is `payload` (an assembler directive). Shared by the
   image's head (head.rs) and xtask's minimal PV kernel (tools/xtask/stubs/xen_boot.s). */
    .macro XEN_NOTE type, payload:vararg
    .pushsection .note.Xen, "a"
    .balign 4
    .long 4                  /* namesz "Xen\0" */
    .long 3f - 2f            /* descsz */
    .long \type
    .asciz "Xen"
    .balign 4
2:  \payload
3:  .balign 4
    .popsection
    .endm
