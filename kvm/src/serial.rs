//! 16550 UART on COM1: the console on QEMU.

use x86_64::instructions::port::Port;

/// COM1's I/O base.
const COM1: u16 = 0x3f8;

/// 16550 registers, as offsets from the base port.
#[derive(Clone, Copy)]
#[repr(u16)]
enum Reg {
    /// Transmit holding (write) / divisor latch low (DLAB = 1).
    Data = 0,
    /// Interrupt enable / divisor latch high (DLAB = 1).
    IrqEnable = 1,
    /// FIFO control (write).
    FifoCtrl = 2,
    /// Line control: word length, DLAB.
    LineCtrl = 3,
    /// Modem control: DTR, RTS, OUT2.
    ModemCtrl = 4,
    /// Line status: bit 5 = transmit holding register empty.
    LineStatus = 5,
}

const LSR_THR_EMPTY: u8 = 1 << 5;

fn port(reg: Reg) -> Port<u8> {
    Port::new(COM1 + reg as u16)
}

fn write_reg(reg: Reg, value: u8) {
    // SAFETY: COM1 is the 16550 on every QEMU x86 machine type we boot on; writing its
    // registers has no memory effects.
    unsafe { port(reg).write(value) }
}

/// Programs 115200 8N1, FIFOs on, interrupts off.
pub fn init() {
    write_reg(Reg::IrqEnable, 0);
    write_reg(Reg::LineCtrl, 0x80); // DLAB on
    write_reg(Reg::Data, 1); // divisor 1 = 115200 baud
    write_reg(Reg::IrqEnable, 0);
    write_reg(Reg::LineCtrl, 0x03); // 8N1, DLAB off
    write_reg(Reg::FifoCtrl, 0xc7); // enable + clear FIFOs
    write_reg(Reg::ModemCtrl, 0x03); // DTR | RTS
}

fn write_byte(b: u8) {
    // Bounded wait: a missing UART reads 0xff (THR empty), a stuck one must not hang us.
    for _ in 0..100_000 {
        // SAFETY: reading the line status register of COM1 has no side effects.
        if unsafe { port(Reg::LineStatus).read() } & LSR_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    write_reg(Reg::Data, b);
}

/// Writes bytes, turning `\n` into `\r\n`.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            write_byte(b'\r');
        }
        write_byte(b);
    }
}
