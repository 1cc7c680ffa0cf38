//! Import cycles of a crate, read from its sources: which module names which (`use crate::…`, `super::…`,
//! `self::…` paths, and a parent naming its children), and the cycles of that graph, between any two
//! modules or between top-level modules. Each crate of the workspace has a test that calls
//! [`assert_no_cycles`], so a cycle fails the tests of the crate where it starts.
//!
//! A child naming an ancestor's items, and an ancestor declaring or naming its children, are not counted:
//! that nesting is the module tree itself. Test-only modules (`#[cfg(test)]`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path such as `delegation::runner::driver` ("" is the crate root).
type Module = String;

/// Every production module of the crate and the file that holds it.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "bin") {
                    pending.push(path);
                }
                continue;
            }
            let Some(relative) = path.strip_prefix(src).ok().and_then(Path::to_str) else {
                continue;
            };
            let Some(stem) = relative.strip_suffix(".rs") else {
                continue;
            };
            if stem == "main" {
                continue;
            }
            let mut segments: Vec<&str> = stem.split('/').collect();
            if matches!(segments.last(), Some(&("mod" | "lib"))) {
                segments.pop();
            }
            found.insert(segments.join("::"), path);
        }
    }
    let test_only = test_only_modules(&found);
    found.retain(|module, _| {
        !test_only
            .iter()
            .any(|test| module == test || module.starts_with(&format!("{test}::")))
    });
    found
}

/// Modules declared under `#[cfg(test)]`.
fn test_only_modules(modules: &BTreeMap<Module, PathBuf>) -> Vec<Module> {
    let mut test_only = Vec::new();
    for (module, path) in modules {
        let source = std::fs::read_to_string(path).expect("readable source");
        let mut previous = "";
        for line in source.lines().map(str::trim) {
            let declared = line
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'));
            if let Some(child) = declared
                && previous.starts_with("#[cfg(")
                && previous.contains("test")
            {
                test_only.push(join(module, child));
            }
            previous = line;
        }
    }
    test_only
}

fn join(parent: &str, child: &str) -> Module {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// The source without its inline test module and without comments.
fn production_code(source: &str) -> String {
    let source = source
        .find("#[cfg(test)]\nmod tests {")
        .map_or(source, |at| &source[..at]);
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths that follow each `crate::`, `super::` or `self::` in `code`, with `{…}` groups expanded, as
/// (head, segments).
fn paths(code: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for head in ["crate", "super", "self"] {
        let needle = format!("{head}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&needle).map(|at| at + from) {
            from = at + needle.len();
            let glued = at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let nested = at > 1 && &bytes[at - 2..at] == b"::";
            if glued || nested {
                continue;
            }
            for tail in expand(&code[from..]) {
                found.push((head, tail));
            }
        }
    }
    found
}

/// The segment lists of a path tail such as `a::b::{c, d::e}`.
fn expand(tail: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut rest = tail;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = index;
                    break;
                }
            }
            let mut items = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (index, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..index]);
                        start = index + 1;
                    }
                    _ => {}
                }
            }
            items.push(&group[start..end]);
            return items
                .into_iter()
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .flat_map(expand)
                .map(|tail| prefix.iter().cloned().chain(tail).collect())
                .collect();
        }
        let length = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if length == 0 {
            return vec![prefix];
        }
        prefix.push(rest[..length].to_owned());
        rest = &rest[length..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => return vec![prefix],
        }
    }
}

/// Which module names which, leaving out the nesting itself (see the module doc).
fn edges(modules: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in modules {
        let code = production_code(&std::fs::read_to_string(path).expect("readable source"));
        let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let directory = path.ends_with("mod.rs") || path.ends_with("lib.rs");
        let mut targets = Vec::new();
        for (head, segments) in paths(&code) {
            let mut base: Vec<String> = match head {
                "crate" => Vec::new(),
                "self" => own.iter().map(|s| (*s).to_owned()).collect(),
                _ => own[..own.len().saturating_sub(1)]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            };
            let mut segments = segments.into_iter().peekable();
            while segments.next_if(|segment| segment == "super").is_some() {
                base.pop();
            }
            base.extend(segments.filter(|segment| segment != "self"));
            targets.push(base);
        }
        if directory {
            // A parent names its children without `self::`.
            let prefix = format!("{module}::");
            for child in modules.keys().filter_map(|other| {
                other
                    .strip_prefix(&prefix)
                    .filter(|rest| !rest.contains("::"))
            }) {
                let named = code.match_indices(&format!("{child}::")).any(|(at, _)| {
                    let before = code[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                });
                if named {
                    targets.push(
                        own.iter()
                            .chain([&child])
                            .map(|s| (*s).to_owned())
                            .collect(),
                    );
                }
            }
        }
        for target in targets {
            let resolved = (0..=target.len())
                .rev()
                .map(|length| target[..length].join("::"))
                .find(|candidate| modules.contains_key(candidate))
                .unwrap_or_default();
            let nested = resolved.is_empty()
                || module.starts_with(&format!("{resolved}::"))
                || resolved.starts_with(&format!("{module}::"))
                || module.is_empty();
            if resolved != *module && !nested {
                edges.entry(module.clone()).or_default().insert(resolved);
            }
        }
    }
    edges
}

/// The cycles of a graph: its strongly connected components with more than one member.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<BTreeSet<Module>> {
    let nodes: BTreeSet<&Module> = edges.keys().chain(edges.values().flatten()).collect();
    let reaches = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.clone()];
        while let Some(node) = pending.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Module, BTreeSet<Module>> =
        nodes.iter().map(|node| (*node, reaches(node))).collect();
    let mut found: Vec<BTreeSet<Module>> = Vec::new();
    for node in &nodes {
        let component: BTreeSet<Module> = reach[node]
            .iter()
            .filter(|other| reach[other].contains(*node))
            .cloned()
            .collect();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

fn describe(cycle: &BTreeSet<Module>, edges: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    let mut lines = Vec::new();
    for from in cycle {
        for to in edges
            .get(from)
            .into_iter()
            .flatten()
            .filter(|to| cycle.contains(*to))
        {
            lines.push(format!("  {from} -> {to}"));
        }
    }
    lines.join("\n")
}

/// Every cycle between modules of the crate whose sources are in `src`, described one edge per line
/// (empty: none).
fn module_cycles(src: &Path) -> Vec<String> {
    let edges = edges(&modules(src));
    cycles(&edges)
        .iter()
        .map(|cycle| describe(cycle, &edges))
        .collect()
}

/// Every cycle between the top-level modules of the crate whose sources are in `src` (empty: none).
fn top_level_cycles(src: &Path) -> Vec<String> {
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in edges(&modules(src)) {
        let from = from.split("::").next().unwrap_or_default().to_owned();
        for to in targets {
            let to = to.split("::").next().unwrap_or_default().to_owned();
            if from != to {
                top.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    cycles(&top)
        .iter()
        .map(|cycle| describe(cycle, &top))
        .collect()
}

/// Panics, naming every cycle, if the crate whose sources are in `src` has a cycle between two modules or
/// between two top-level modules. `nested` is a module the reader must find (so a reader that found
/// nothing cannot pass).
pub fn assert_no_cycles(src: &Path, nested: &str) {
    assert!(
        modules(src).contains_key(nested),
        "the reader did not find {nested} under {}",
        src.display()
    );
    let found = module_cycles(src);
    assert!(
        found.is_empty(),
        "import cycles (move the shared piece into a module of its own):\n{}",
        found.join("\n\n")
    );
    let found = top_level_cycles(src);
    assert!(
        found.is_empty(),
        "cycles between top-level modules (see the layering in the crate doc):\n{}",
        found.join("\n\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_cycles() {
        let edges: BTreeMap<Module, BTreeSet<Module>> = [
            ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
            (
                "b".to_owned(),
                BTreeSet::from(["a".to_owned(), "c".to_owned()]),
            ),
        ]
        .into();
        assert_eq!(
            cycles(&edges),
            [BTreeSet::from(["a".to_owned(), "b".to_owned()])]
        );
        let grouped =
            paths("use super::{idle_pool::IdlePool, guard::{Guard, Refusal}};\nself::x::Y");
        assert!(grouped.contains(&("super", vec!["idle_pool".into(), "IdlePool".into()])));
        assert!(grouped.contains(&("super", vec!["guard".into(), "Refusal".into()])));
        assert!(grouped.contains(&("self", vec!["x".into(), "Y".into()])));
    }
}
