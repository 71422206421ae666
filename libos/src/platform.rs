//! The one contract between libos and a backend.
//!
//! A backend (`upcall-kvm`, `upcall-xen`) implements [`Platform`] on a zero-sized
//! `static` and hands `&'static dyn Platform` to [`crate::start`]. libos calls these
//! methods and nothing else of the backend.

/// What libos needs from a hypervisor backend.
pub trait Platform: Sync {
    /// The platform's short name as apps print it, e.g. `"kvm"` or `"xen"`.
    ///
    /// Context: any.
    fn name(&self) -> &'static str;

    /// Writes raw bytes to the console, synchronously and without allocating.
    ///
    /// Context: any, including exception and panic paths; must not take locks that a
    /// normal path could hold (libos serializes whole lines above this).
    fn console_write(&self, bytes: &[u8]);

    /// Ends the image with `code` as its exit status (0 = success, non-zero = failure).
    ///
    /// Context: any; never returns. Backends whose hypervisor cannot carry the full
    /// range encode it as best they can (see the backend's docs).
    fn exit(&self, code: i32) -> !;
}
