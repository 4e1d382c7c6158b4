//! The architecture test: the level map at the top of `src/lib.rs` holds for every file.
//!
//! It reads every `src/**/*.rs` (comments, string literals and `#[cfg(test)] mod tests`
//! blocks left out), collects its `crate::` and `super::` imports — grouped ones (`use
//! crate::{a, b::{c, d}}`) and inline paths (`crate::a::f()`) alike — and resolves each to
//! the module file it names. Then:
//! - a top-level module may import only from its own level or a level below (the levels are
//!   read from the map in `src/lib.rs`, so the map and this test cannot disagree);
//! - sibling modules (at the top, and inside every module) may not import from each other
//!   in a cycle. A module and its own children are not peers: a child using its parent's
//!   types, and the parent re-exporting its child, is the module tree, not a cycle.
//!
//! Every violation is reported with the file and the import that causes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path below the crate root (`["http", "stack"]`).
type ModPath = Vec<String>;

/// One `crate::…` path found in a file: the file and the text as written, and what it names.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    target: Vec<String>,
    text: String,
}

/// Every module file below `src` (`lib.rs` is the root; `main.rs` is the binary, not the
/// library, and is skipped).
fn module_files(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut modules = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut segments: ModPath = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            match segments.as_slice() {
                [only] if only == "main" => continue,
                [only] if only == "lib" => segments.clear(),
                [.., last] if last == "mod" => {
                    segments.pop();
                }
                _ => {}
            }
            modules.insert(segments, path);
        }
    }
    modules
}

/// `text` without comments, string and character literals, and `#[cfg(test)] mod … { … }`
/// blocks (test code is not part of the architecture).
fn code_of(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |end| end + 2);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += raw.find("\"#").map_or(rest.len(), |end| end + 5);
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if rest.starts_with("'") && rest.len() > 3 && (rest.as_bytes()[2] == b'\'' || rest.as_bytes()[1] == b'\\') {
            // A character literal (lifetimes such as `'a` have no closing quote here).
            let end = rest[2..].find('\'').map_or(1, |e| e + 3);
            i += end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_test_modules(&out)
}

fn strip_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_inline_mod = (after.starts_with("mod ") || after.starts_with("pub mod ")) && {
            let head_end = after.find(['{', ';']).unwrap_or(after.len());
            after[head_end..].starts_with('{')
        };
        out.push_str(&rest[..at]);
        if !is_inline_mod {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = at + rest[at..].find('{').unwrap();
        let mut depth = 0usize;
        let mut end = rest.len();
        for (offset, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses the path tree at the start of `text` (`a::b`, `a::{b, c::d}`, `*`), appending every
/// full path to `out` with `prefix` in front. Returns how many bytes were read.
fn parse_tree(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut path = prefix.to_vec();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                i += parse_tree(&text[i..], &path, out);
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => return i + 1,
                    _ => return i,
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'}') {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < bytes.len() && is_ident_byte(bytes[i]) {
            i += 1;
        }
        let segment = &text[start..i];
        if !segment.is_empty() && segment != "self" {
            path.push(segment.to_string());
        }
        if text[i..].starts_with("::") {
            i += 2;
            continue;
        }
        out.push(path);
        return i;
    }
}

/// Every `crate::` and `super::` path in the code of the module `from`.
fn imports_of(from: &ModPath, file: &Path, code: &str) -> Vec<Import> {
    let mut imports = Vec::new();
    let bytes = code.as_bytes();
    for (keyword, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        if keyword > 0 && (is_ident_byte(bytes[keyword - 1]) || bytes[keyword - 1] == b':') {
            continue;
        }
        let mut base: Vec<String> = Vec::new();
        let mut at = keyword;
        if code[at..].starts_with("crate::") {
            at += "crate::".len();
        } else {
            base = from.clone();
            while code[at..].starts_with("super::") {
                base.pop();
                at += "super::".len();
            }
        }
        let mut paths = Vec::new();
        let read = parse_tree(&code[at..], &base, &mut paths);
        let text = code[keyword..at + read].split_whitespace().collect::<Vec<_>>().join(" ");
        for target in paths {
            imports.push(Import { file: file.to_path_buf(), target, text: text.clone() });
        }
    }
    imports
}

/// The module file a path names: its longest prefix that is a module.
fn module_of(target: &[String], modules: &BTreeMap<ModPath, PathBuf>) -> ModPath {
    (0..=target.len()).rev().map(|n| target[..n].to_vec()).find(|prefix| modules.contains_key(prefix)).unwrap_or_default()
}

/// The level of each top-level module, read from the ```` ```text ```` map in `lib.rs`: a
/// line `level N  <label>  <module>  <what it owns>` opens a level; a following line whose
/// first word starts in the module column names another module of that level.
fn level_map(lib_rs: &str, top_level: &BTreeSet<String>) -> Result<BTreeMap<String, u32>, String> {
    let lines: Vec<&str> = lib_rs.lines().filter_map(|l| l.strip_prefix("//!")).map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
    let start = lines.iter().position(|l| l.trim() == "```text").ok_or("src/lib.rs: no ```text level map")?;
    let mut levels = BTreeMap::new();
    let mut level = None;
    let mut module_column = None;
    for line in &lines[start + 1..] {
        if line.trim() == "```" {
            break;
        }
        if let Some(rest) = line.strip_prefix("level ") {
            let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
            level = Some(number.parse::<u32>().map_err(|_| format!("src/lib.rs: bad level line {line:?}"))?);
            // `level N  label  module …`: the module is the third word.
            let mut words = 0;
            let mut column = None;
            let mut previous_space = true;
            for (i, c) in line.char_indices() {
                if !c.is_whitespace() && previous_space {
                    words += 1;
                    if words == 4 {
                        column = Some(i);
                        break;
                    }
                }
                previous_space = c.is_whitespace();
            }
            module_column = Some(column.ok_or_else(|| format!("src/lib.rs: level line without a module: {line:?}"))?);
        }
        let (Some(level), Some(column)) = (level, module_column) else { continue };
        // The module column: after the level and label on a level line, blank before it on a
        // continuation line (a description's wrapped line starts further right).
        let Some(before) = line.get(..column) else { continue };
        if !line.starts_with("level ") && !before.trim().is_empty() {
            continue;
        }
        let name: String = line[column..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        if !top_level.contains(&name) {
            return Err(format!("src/lib.rs: the level map names `{name}`, which is not a module of the crate"));
        }
        if levels.insert(name.clone(), level).is_some() {
            return Err(format!("src/lib.rs: the level map names `{name}` twice"));
        }
    }
    let missing: Vec<&String> = top_level.iter().filter(|m| !levels.contains_key(*m)).collect();
    if !missing.is_empty() {
        return Err(format!("src/lib.rs: the level map does not place {missing:?}"));
    }
    Ok(levels)
}

/// Every violation of the levels and every import cycle among siblings, as readable lines.
fn violations(src: &Path) -> Vec<String> {
    let modules = module_files(src);
    let top_level: BTreeSet<String> = modules.keys().filter(|m| m.len() == 1).map(|m| m[0].clone()).collect();
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let levels = match level_map(&lib_rs, &top_level) {
        Ok(levels) => levels,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    // Sibling edges, per parent: (from, to) -> the imports that make the edge.
    let mut edges: BTreeMap<(ModPath, String, String), Vec<Import>> = BTreeMap::new();
    for (module, file) in &modules {
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for import in imports_of(module, file, &code) {
            let target = module_of(&import.target, &modules);
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == target.len() {
                continue; // itself, an ancestor or a descendant
            }
            let (from, to) = (module[common].clone(), target[common].clone());
            if common == 0 && levels[&from] < levels[&to] {
                problems.push(format!(
                    "{}: `{}` — level {} module `{from}` imports from level {} module `{to}` (a level above)",
                    import.file.display(),
                    import.text,
                    levels[&from],
                    levels[&to]
                ));
            }
            edges.entry((module[..common].to_vec(), from, to)).or_default().push(import);
        }
    }
    let parents: BTreeSet<ModPath> = edges.keys().map(|(parent, ..)| parent.clone()).collect();
    for parent in parents {
        let graph: BTreeMap<&str, Vec<&str>> = edges.keys().filter(|(p, ..)| *p == parent).fold(BTreeMap::new(), |mut g, (_, a, b)| {
            g.entry(a.as_str()).or_default().push(b.as_str());
            g
        });
        for cycle in cycles(&graph) {
            let scope = if parent.is_empty() { "crate".to_string() } else { format!("crate::{}", parent.join("::")) };
            let mut lines = vec![format!("import cycle among the modules of {scope}: {}", cycle.join(" → "))];
            for pair in cycle.windows(2) {
                let imports = &edges[&(parent.clone(), pair[0].to_string(), pair[1].to_string())];
                let first = &imports[0];
                lines.push(format!("    {}: `{}` ({} → {})", first.file.display(), first.text, pair[0], pair[1]));
            }
            problems.push(lines.join("\n"));
        }
    }
    problems
}

/// One cycle (closed: first node repeated at the end) per strongly connected component with
/// more than one node.
fn cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    let reaches = |from: &'a str, to: &'a str| -> Option<Vec<&'a str>> {
        // Breadth-first: the shortest path from `from` to `to`.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(node) = queue.pop_front() {
            for &next in graph.get(node).into_iter().flatten() {
                if next == to {
                    let mut path = vec![to, node];
                    let mut at = node;
                    while at != from {
                        at = previous[at];
                        path.push(at);
                    }
                    path.reverse();
                    return Some(path);
                }
                if next != from && !previous.contains_key(next) {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    };
    let mut found: Vec<Vec<&str>> = Vec::new();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for &node in graph.keys() {
        if covered.contains(node) {
            continue;
        }
        if let Some(cycle) = reaches(node, node) {
            covered.extend(cycle.iter().copied());
            found.push(cycle);
        }
    }
    found
}

#[test]
fn the_level_map_holds_and_modules_import_in_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = violations(&src);
    assert!(problems.is_empty(), "the architecture in src/lib.rs does not hold:\n{}", problems.join("\n"));
}

/// A crate written to break the rules: the checker must name each break.
#[test]
fn the_checker_reports_upward_imports_and_cycles_by_file_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("front")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).unwrap();
    write(
        "lib.rs",
        "//! ```text\n//! level 2  front-ends  front  the front end\n//! level 1  services    alpha  a\n//!                      beta   b\n//! level 0  base        base   config\n//! ```\npub mod alpha;\n",
    );
    write("base.rs", "use crate::alpha::Thing; // a level above\n");
    write(
        "alpha.rs",
        "use crate::{beta::{self, Other}};\n/// crate::front::NotReal is only a comment\nfn f() { let _ = \"crate::front\"; }\n",
    );
    write("beta.rs", "pub fn g() { crate::alpha::f(); }\n#[cfg(test)]\nmod tests { use crate::front::x; }\n");
    write("front.rs", "pub mod one;\npub mod two;\nuse crate::base;\n");
    write("front/one.rs", "use super::two::Two;\nuse super::Parent;\n");
    write("front/two.rs", "use super::one::One;\n");
    let problems = violations(&src).join("\n");
    assert!(problems.contains("base.rs: `crate::alpha::Thing` — level 0 module `base` imports from level 1 module `alpha`"), "{problems}");
    assert!(problems.contains("import cycle among the modules of crate: alpha → beta → alpha"), "{problems}");
    assert!(problems.contains("beta.rs: `crate::alpha::f` (beta → alpha)"), "{problems}");
    assert!(problems.contains("import cycle among the modules of crate::front: one → two → one"), "{problems}");
    assert!(problems.contains("one.rs: `super::two::Two` (one → two)"), "{problems}");
    assert!(
        !problems.contains("front::NotReal") && !problems.contains("crate::front::x"),
        "comments, strings and test modules are not imports: {problems}"
    );
    assert!(!problems.contains("Parent"), "a child using its parent is not a cycle: {problems}");
    assert_eq!(problems.matches("level 0 module").count() + problems.matches("import cycle").count(), 3, "{problems}");

    write("lib.rs", "//! ```text\n//! level 1  services    alpha  a\n//! ```\n");
    assert!(violations(&src).join("\n").contains("does not place"), "a module missing from the map is reported");
}
