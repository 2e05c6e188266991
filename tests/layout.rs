//! The code's shape, as ARCHITECTURE.md states it: the imports among `src/`'s top-level modules
//! have no circle, every top-level module is named in ARCHITECTURE.md's code map, and no file in
//! `src/` outside `tools/` is over 600 lines (generated code, marked `// @generated`, aside).
//!
//! An import is a `crate::NAME` path (or a `crate::{NAME, ...}` group) in a module's files,
//! outside comments; a module's files are `src/NAME.rs` or everything under `src/NAME/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

fn top_level_modules() -> BTreeSet<String> {
    let mut mods = BTreeSet::new();
    for e in std::fs::read_dir(SRC).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            mods.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "lib" && stem != "main" {
                mods.insert(stem.to_string());
            }
        }
    }
    mods
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn files_of(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = Path::new(SRC).join(format!("{module}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let dir = Path::new(SRC).join(module);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    files
}

/// The code of `text` without `//` comments (doc links do not make a dependency).
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules `code` names through `crate::`.
fn imports(code: &str, mods: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the names at the group's first level.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for ch in group.chars() {
                match ch {
                    '}' if depth == 0 => break,
                    ',' if depth == 0 => items.push(String::new()),
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    c if depth == 0 => items.last_mut().unwrap().push(c),
                    _ => {}
                }
            }
            for item in items {
                let head: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if mods.contains(&head) {
                    out.insert(head);
                }
            }
        } else {
            let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if mods.contains(&head) {
                out.insert(head);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mods = top_level_modules();
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for m in &mods {
        let entry = g.entry(m.clone()).or_default();
        for f in files_of(m) {
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            for t in imports(&code, &mods) {
                if &t != m {
                    let rel = f.strip_prefix(SRC).unwrap().display().to_string();
                    entry.entry(t).or_default().insert(rel);
                }
            }
        }
    }
    g
}

/// A circle in `g`, as the modules along it, if there is one.
fn circle(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for next in g.get(m).into_iter().flat_map(|e| e.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == next).unwrap();
                    let mut c = path[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(next, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_import_graph_reader_sees_paths_and_groups() {
    let mods: BTreeSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let code = "use crate::a::X;\nuse crate::{b::Y, c::{self, Z}};\nfn f() { crate::d::g() }";
    assert_eq!(imports(code, &mods), mods);
    assert!(imports(&code_of("// see crate::a\nfn f() {}"), &mods).is_empty());
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    g.entry("a".into()).or_default().entry("b".into()).or_default();
    g.entry("b".into()).or_default().entry("c".into()).or_default();
    assert_eq!(circle(&g), None);
    g.entry("c".into()).or_default().entry("a".into()).or_default();
    assert_eq!(circle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

#[test]
fn no_circle_among_top_level_modules() {
    let g = graph();
    if let Some(c) = circle(&g) {
        let edges: Vec<String> =
            c.windows(2).map(|w| format!("  {} -> {} in {:?}", w[0], w[1], g[&w[0]][&w[1]])).collect();
        panic!("the imports among src/'s top-level modules go in a circle:\n{}", edges.join("\n"));
    }
}

#[test]
fn architecture_names_every_top_level_module() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
    let map = doc.split("## Code map").nth(1).expect("ARCHITECTURE.md has a code map");
    let missing: Vec<String> = top_level_modules()
        .into_iter()
        .filter(|m| !map.contains(&format!("`{m}/`")) && !map.contains(&format!("`{m}.rs`")))
        .collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map does not name: {missing:?}");
}

#[test]
fn no_long_files_outside_the_list() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut long = Vec::new();
    for f in files {
        let rel = f.strip_prefix(SRC).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        // Generated code (bitcoind/ipc/schema/, from Core's Cap'n Proto schema by
        // contrib/ipc-schema.sh) is not written by hand: exempt, as its first line says.
        let generated = text.lines().next().is_some_and(|l| l.starts_with("// @generated"));
        // tools/ is off the serving path (subcommands such as the bench): exempt.
        if lines > 600 && !rel.starts_with("tools/") && !generated {
            long.push(format!("{rel} ({lines} lines)"));
        }
    }
    assert!(long.is_empty(), "files over 600 lines (split them by subject): {long:?}");
}
