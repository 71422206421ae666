//! Makes `upcall.ld` (this backend's linker script) findable by the image link.
//!
//! `cargo:rustc-link-search` propagates to the final image, and `.cargo/config.toml`
//! passes `-Tupcall.ld`, which the linker resolves through the search path.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}/link");
    println!("cargo:rerun-if-changed=link/upcall.ld");
}
