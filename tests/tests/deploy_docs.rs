//! The documentation as a reader meets it: the README stays short (≤ 300 lines) and points into
//! docs/; every relative link of README.md and docs/ reaches a file of the repository, and a
//! link to a heading reaches a heading of that name; nothing points outside the repository.
//! No root, no kernel state.
use std::path::{Path, PathBuf};

use integration_tests::deploy::repo;

/// GitHub's anchor for a heading: lower case, punctuation other than `-` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files
}

/// `](target)` links of a Markdown text.
fn links(text: &str) -> Vec<&str> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .filter(|l| !l.contains(char::is_whitespace))
        .collect()
}

#[test]
fn the_readme_is_short_and_links_the_docs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines");
    for page in [
        "docs/policy.md",
        "docs/deployment.md",
        "docs/monitoring.md",
        "docs/design.md",
        "docs/kernel.md",
        "docs/runbooks/README.md",
        "LICENSE",
    ] {
        assert!(
            readme.contains(&format!("]({page}")),
            "README.md does not link {page}"
        );
    }
    let license = std::fs::read_to_string(repo().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(
        license.contains("END OF TERMS AND CONDITIONS"),
        "the full text"
    );
}

#[test]
fn every_relative_link_reaches_a_file_and_heading_of_the_repository() {
    let root = repo();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            !text.contains("../shared"),
            "{shown} points outside the repository"
        );
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (path, heading) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let target = target
                .canonicalize()
                .unwrap_or_else(|e| panic!("{shown}: link {link} reaches nothing: {e}"));
            assert!(
                target.starts_with(&root),
                "{shown}: {link} leaves the repository"
            );
            if !heading.is_empty() {
                let page = std::fs::read_to_string(&target).unwrap();
                let found = page
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| anchor(h.trim_start_matches('#')))
                    .any(|a| a == heading);
                assert!(
                    found,
                    "{shown}: no heading #{heading} in {}",
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} links");
}
