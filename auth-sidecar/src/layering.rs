//! Keeps the crate free of import cycles (see the layering in the crate doc): any cycle between two
//! modules, or between two top-level modules, fails here ([`matrixrtc_test_support::layering`]).

#[test]
fn no_module_names_a_module_that_names_it_back() {
    matrixrtc_test_support::layering::assert_no_cycles(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "delegation::runner::driver",
    );
}
