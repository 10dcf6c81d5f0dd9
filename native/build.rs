//! Generates the Video Codec SDK and CUDA driver bindings with bindgen
//! from the headers Debian's `libffmpeg-nvenc-dev` ships (set
//! `FFNVCODEC_INCLUDE` for another location). Nothing is linked: the
//! libraries are loaded at run time (see `src/loader.rs`), so the build
//! needs the headers and libclang but no NVIDIA driver.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=FFNVCODEC_INCLUDE");
    let include = env::var("FFNVCODEC_INCLUDE").unwrap_or_else(|_| "/usr/include".to_owned());
    let header_dir = PathBuf::from(&include).join("ffnvcodec");
    if !header_dir.join("nvEncodeAPI.h").exists() {
        panic!(
            "vodfarm-native: {} has no nvEncodeAPI.h; install Debian's libffmpeg-nvenc-dev \
             (scripts/deps.sh does) or set FFNVCODEC_INCLUDE to the directory holding ffnvcodec/",
            header_dir.display()
        );
    }
    for h in [
        "dynlink_cuda.h",
        "dynlink_cuviddec.h",
        "dynlink_nvcuvid.h",
        "nvEncodeAPI.h",
    ] {
        println!("cargo:rerun-if-changed={}", header_dir.join(h).display());
    }
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg(format!("-I{include}"))
        .allowlist_file(".*/ffnvcodec/.*")
        // The GUIDs are `static const` in the header and the entry points
        // are exported by libraries we never link: src/nvenc.rs spells the
        // GUIDs out and src/loader.rs resolves the functions at run time.
        .blocklist_var(".*_GUID")
        .blocklist_function(".*")
        .derive_default(true)
        .derive_debug(true)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over the ffnvcodec headers");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("sdk.rs");
    bindings.write_to_file(&out).expect("write sdk.rs");
}
