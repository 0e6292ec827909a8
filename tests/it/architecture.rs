//! The architecture check: imports in src/ point one way and its files stay
//! short, so the layout the docs describe is the layout the code has.
//!
//! The rules, over src/ outside test code:
//! - every `crate::…`, `super::…` and `self::…` path (in a `use`, inline in
//!   code, or inside a macro call) is an arrow from the file that writes it
//!   to the file defining the longest module prefix it names
//!   (`crate::report::model::Report` -> src/report/model.rs; `super::X` from
//!   src/replay/engine.rs -> src/replay/mod.rs; `use crate::route;` ->
//!   src/route.rs);
//! - no two files reach each other through arrows, directly or through
//!   other files;
//! - no two top-level modules do either. A top-level module is src/x.rs or
//!   the folder src/x/: a child of lib.rs, or a module main.rs declares for
//!   the binary. The crate roots belong to none, so main.rs may import
//!   anything;
//! - no file is longer than 600 lines outside test code.
//!
//! Test code is an item under `#[cfg(test)]` (usually `mod tests { … }`); a
//! file declared as `#[cfg(test)] mod …;` is not read at all. Paths that do
//! not start with `crate`, `super` or `self` are not arrows: `tapedeck::…`
//! from the binary, or a mod.rs's `pub use child::X;`. In the binary's
//! modules `crate::` means main.rs.
//!
//! [`source`] reads src/, [`check`] judges it; the tests below pin its reading of the
//! rules on small trees written to a temporary directory.

mod check;
mod source;

use std::path::Path;

use check::{Violation, check};

#[test]
fn src_imports_point_one_way_and_files_stay_short() {
    let violations = check(Path::new(env!("CARGO_MANIFEST_DIR")));
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "the architecture check found {} problem(s) in src/:\n\n{}",
        violations.len(),
        listed.join("\n"),
    );
}

/// A package directory holding `files`, given relative to it.
fn package(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .expect("create directories");
        std::fs::write(&path, text).expect("write source file");
    }
    dir
}

fn checked(files: &[(&str, &str)]) -> Vec<Violation> {
    check(package(files).path())
}

/// The members of every file cycle found.
fn file_cycles(violations: &[Violation]) -> Vec<Vec<String>> {
    violations
        .iter()
        .filter_map(|v| match v {
            Violation::FileCycle(tangle) => Some(tangle.members.clone()),
            _ => None,
        })
        .collect()
}

/// The members of every top-level module cycle found.
fn module_cycles(violations: &[Violation]) -> Vec<Vec<String>> {
    violations
        .iter()
        .filter_map(|v| match v {
            Violation::ModuleCycle(tangle) => Some(tangle.members.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_child_using_super_while_its_mod_rs_uses_self_child_is_a_file_cycle() {
    let violations = checked(&[
        ("src/lib.rs", "pub mod a;\n"),
        (
            "src/a/mod.rs",
            "pub mod b;\npub struct Shared;\npub fn make() -> self::b::Child {\n    self::b::Child\n}\n",
        ),
        ("src/a/b.rs", "use super::Shared;\npub struct Child;\n"),
    ]);
    assert_eq!(
        file_cycles(&violations),
        [["src/a/b.rs", "src/a/mod.rs"]],
        "{violations:#?}"
    );
    assert!(module_cycles(&violations).is_empty(), "{violations:#?}");
    let message = violations[0].to_string();
    assert!(message.contains("src/a/b.rs:1  super::Shared"), "{message}");
    assert!(
        message.contains("src/a/mod.rs:3  self::b::Child"),
        "{message}"
    );
    assert!(message.contains("fix:"), "{message}");
}

#[test]
fn paths_in_use_groups_are_arrows() {
    let violations = checked(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("src/a.rs", "use crate::{b::Y};\npub struct X;\n"),
        ("src/b.rs", "use crate::{a::{self, X}};\npub struct Y;\n"),
    ]);
    assert_eq!(
        file_cycles(&violations),
        [["src/a.rs", "src/b.rs"]],
        "{violations:#?}"
    );
    assert_eq!(
        module_cycles(&violations),
        [["src/a.rs", "src/b.rs"]],
        "{violations:#?}"
    );
}

#[test]
fn a_cycle_only_through_test_code_is_allowed() {
    let violations = checked(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("src/a.rs", "use crate::b::Y;\npub struct X;\n"),
        (
            "src/b.rs",
            "pub struct Y;\n\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n}\n\n\
             #[cfg(test)]\nfn helper() -> crate::a::X {\n    crate::a::X\n}\n\n\
             #[cfg(test)]\nmod more;\n",
        ),
        // Declared under #[cfg(test)], so never read, parseable or not.
        ("src/b/more.rs", "use crate::a::X; this is not Rust"),
    ]);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_file_of_601_lines_is_too_long() {
    let long = format!("{}pub fn last() {{}}\n", "// a line\n".repeat(600));
    let violations = checked(&[("src/lib.rs", "pub mod long;\n"), ("src/long.rs", &long)]);
    assert!(
        matches!(
            &violations[..],
            [Violation::LongFile { file, lines: 601 }] if file == "src/long.rs"
        ),
        "{violations:#?}"
    );
    let message = violations[0].to_string();
    assert!(message.contains("split it along its parts"), "{message}");
}

#[test]
fn test_code_does_not_count_toward_a_files_length() {
    let tests = format!(
        "#[cfg(test)]\nmod tests {{\n{}}}\n",
        "    // a test line\n".repeat(197)
    );
    let file = format!("{}{tests}", "// a line\n".repeat(500));
    assert_eq!(file.lines().count(), 700);
    let violations = checked(&[("src/lib.rs", "pub mod long;\n"), ("src/long.rs", &file)]);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn top_level_modules_reaching_each_other_are_a_cycle_without_a_file_cycle() {
    let violations = checked(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("src/a/mod.rs", "pub mod x;\npub struct Z;\n"),
        (
            "src/a/x.rs",
            "pub fn f() -> crate::b::Y {\n    crate::b::Y\n}\n",
        ),
        ("src/b.rs", "pub struct Y;\npub fn g(_: crate::a::Z) {}\n"),
    ]);
    assert!(file_cycles(&violations).is_empty(), "{violations:#?}");
    assert_eq!(
        module_cycles(&violations),
        [["src/a/", "src/b.rs"]],
        "{violations:#?}"
    );
    let message = violations[0].to_string();
    assert!(
        message.contains("src/a/x.rs:1  crate::b::Y  (src/b.rs)"),
        "{message}"
    );
    assert!(
        message.contains("src/b.rs:2  crate::a::Z  (src/a/mod.rs)"),
        "{message}"
    );
}

#[test]
fn crate_paths_in_the_binarys_modules_point_at_main_rs() {
    let violations = checked(&[
        ("src/lib.rs", "pub struct Outcome;\n"),
        (
            "src/main.rs",
            "mod cli;\npub struct Outcome;\nfn main() {\n    self::cli::parse();\n}\n",
        ),
        (
            "src/cli.rs",
            "pub fn parse() -> crate::Outcome {\n    crate::Outcome\n}\n",
        ),
    ]);
    assert_eq!(
        file_cycles(&violations),
        [["src/cli.rs", "src/main.rs"]],
        "{violations:#?}"
    );
    // main.rs is a crate root, not a top-level module.
    assert!(module_cycles(&violations).is_empty(), "{violations:#?}");
}

#[test]
fn paths_inside_macros_count_and_visibilities_do_not() {
    let violations = checked(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "src/a.rs",
            "pub(crate) fn f() -> String {\n    format!(\"{}\", crate::b::NAME)\n}\n",
        ),
        (
            "src/b.rs",
            "pub(crate) const NAME: &str = \"b\";\npub(super) fn g() {\n    crate::a::f();\n}\n",
        ),
    ]);
    let [Violation::ModuleCycle(_), Violation::FileCycle(tangle)] = &violations[..] else {
        panic!("expected a module cycle and a file cycle: {violations:#?}");
    };
    let arrows: Vec<(&str, usize, &str)> = tangle
        .arrows
        .values()
        .flatten()
        .map(|a| (a.from.as_str(), a.line, a.path.as_str()))
        .collect();
    assert_eq!(
        arrows,
        [
            ("src/a.rs", 2, "crate::b::NAME"),
            ("src/b.rs", 3, "crate::a::f")
        ]
    );
}

#[test]
fn a_module_whose_file_is_missing_is_reported() {
    let violations = checked(&[("src/lib.rs", "pub mod gone;\n")]);
    assert!(
        matches!(&violations[..], [Violation::Unchecked { file, .. }] if file == "src/lib.rs"),
        "{violations:#?}"
    );
}
