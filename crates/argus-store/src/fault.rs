//! Fault injection for crash tests (debug builds only): `ARGUS_FAULT_INJECT=<point>` makes the process abort at
//! that named point, as a `kill -9` there would. Release builds compile every point to nothing.

/// Aborts the process when `ARGUS_FAULT_INJECT` names `name` (debug builds); does nothing otherwise.
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ARGUS_FAULT_INJECT").is_ok_and(|v| v == name) {
        eprintln!("fault injection: aborting at {name}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
