//! Keeps the crate free of import cycles (see the layering in the crate doc), with the reader in
//! [`matrixrtc_test_support::layering`]: any cycle between two modules, or between two top-level modules,
//! fails here.

use std::path::{Path, PathBuf};

use matrixrtc_test_support::layering::{module_cycles, modules, top_level_cycles};

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_names_a_module_that_names_it_back() {
    assert!(
        modules(&source_dir()).contains_key("controller::dereference::credentials"),
        "the reader finds nested modules"
    );
    let found = module_cycles(&source_dir());
    assert!(
        found.is_empty(),
        "import cycles (move the shared piece into a module of its own):\n{}",
        found.join("\n\n")
    );
}

#[test]
fn no_top_level_module_names_one_that_names_it_back() {
    let found = top_level_cycles(&source_dir());
    assert!(
        found.is_empty(),
        "cycles between top-level modules (see the layering in lib.rs):\n{}",
        found.join("\n\n")
    );
}
