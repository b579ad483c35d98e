//! The agent's layers keep one direction of dependencies, and no module
//! imports another that imports it back (docs/ARCHITECTURE.md). Read from
//! the source, so a new `use` that breaks the rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use of the crate, besides itself.
const ALLOWED: [(&str, &[&str]); 11] = [
    ("model", &[]),
    ("error", &[]),
    ("host", &["error"]),
    ("probes", &["error", "host"]),
    ("snapshot", &["host", "model", "probes"]),
    ("measure", &["error", "host", "model", "snapshot"]),
    (
        "collectors",
        &["error", "host", "measure", "model", "probes", "snapshot"],
    ),
    (
        "agent",
        &[
            "collectors",
            "error",
            "host",
            "measure",
            "model",
            "probes",
            "snapshot",
        ],
    ),
    ("output", &["model", "snapshot"]),
    ("cli", &["probes"]),
    (
        "commands",
        &[
            "agent",
            "cli",
            "collectors",
            "error",
            "host",
            "measure",
            "model",
            "output",
            "probes",
            "snapshot",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file of the library as (module path, text); `main.rs` is
/// the binary and `lib.rs` only declares.
fn modules() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let rel = p.strip_prefix(src()).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            if path == ["main"] || path == ["lib"] {
                continue;
            }
            out.push((path, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// Module paths a file refers to: `crate::a::b::...` (each name of a
/// `crate::{a, b}` group too) and `super::...` resolved against `me`.
fn references(me: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                for item in group.split('}').next().unwrap_or("").split(',') {
                    out.insert(ident(item.trim()));
                }
            } else {
                out.insert(ident(after));
            }
            rest = after;
        }
        let mut rest = line;
        while let Some(i) = rest.find("super::") {
            // `super::` of a file `a/b.rs` is `a`; of `a/b/mod.rs`, also `a`.
            let mut base: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
            let mut after = &rest[i + "super::".len()..];
            while let Some(more) = after.strip_prefix("super::") {
                base.pop();
                after = more;
            }
            if !after.starts_with('{') && !after.starts_with('*') {
                base.extend(ident(after));
            }
            out.insert(base);
            rest = &rest[i + "super::".len()..];
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The longest module path among `known` that `path` starts with.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

#[test]
fn layers_depend_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut wrong = Vec::new();
    for (me, text) in modules() {
        let layer = me[0].as_str();
        let Some(may) = allowed.get(layer) else {
            wrong.push(format!("{}: not in any layer", me.join("::")));
            continue;
        };
        for r in references(&me, text.as_str()) {
            let target = r[0].as_str();
            if target != layer && !may.contains(&target) && allowed.contains_key(target) {
                wrong.push(format!("{} uses {}", me.join("::"), r.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mods = modules();
    let known: BTreeSet<Vec<String>> = mods.iter().map(|(p, _)| p.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (me, text) in &mods {
        for r in references(me, text) {
            let Some(to) = resolve(&r, &known) else {
                continue;
            };
            // A parent declares and re-exports its children: not an import.
            if to != *me && !to.starts_with(me) {
                edges.entry(me.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a path back to where it started.
    fn back_to(
        start: &Vec<String>,
        at: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        seen: &mut BTreeSet<Vec<String>>,
        trail: &mut Vec<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                trail.push(next.join("::"));
                return true;
            }
            if seen.insert(next.clone()) {
                trail.push(next.join("::"));
                if back_to(start, next, edges, seen, trail) {
                    return true;
                }
                trail.pop();
            }
        }
        false
    }
    for m in known {
        let mut trail = vec![m.join("::")];
        let found = back_to(&m, &m, &edges, &mut BTreeSet::new(), &mut trail);
        assert!(!found, "import circle: {}", trail.join(" -> "));
    }
}

#[test]
fn the_checker_sees_references() {
    let me: Vec<String> = vec!["collectors".into(), "sched".into()];
    let refs = references(
        &me,
        "use crate::host::cgroup::CgroupResolver;\nuse crate::{error, model::hist};\nuse super::{counter, take};\nuse super::fold_round;\n// crate::ignored\n",
    );
    let want: BTreeSet<Vec<String>> = [
        vec!["host", "cgroup", "CgroupResolver"],
        vec!["error"],
        vec!["model", "hist"],
        vec!["collectors"],
        vec!["collectors", "fold_round"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(refs, want);
}
