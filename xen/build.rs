//! Makes `upcall.ld` (this backend's linker script) findable by the image link; see
//! the KVM backend's build script for how the pieces fit.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}/link");
    println!("cargo:rerun-if-changed=link/upcall.ld");
}
