//! A `targets:` entry: `cgroup:`, `systemd_unit:` or `process:`, each validated (the rules
//! are in [`crate::policy::targets`]).

use super::{Cx, PolicyError, Problem, TARGET_EXPECTED, TARGET_KEYS, Target};
use crate::yaml::{Kind, Node};

impl Cx<'_> {
    pub(super) fn target(&self, entry: &Node) -> Result<Target, PolicyError> {
        let fields = self.fields(entry, "a targets entry", TARGET_KEYS, TARGET_EXPECTED)?;
        let field = match fields.as_slice() {
            [] => {
                return Err(self.err(
                    entry,
                    Problem::MissingKey {
                        expected: TARGET_EXPECTED,
                    },
                ));
            }
            [field] => field,
            [first, second, ..] => {
                let problem = Problem::ConflictingKeys {
                    first: first.name,
                    second: second.name,
                };
                return Err(self.err(second.key, problem));
            }
        };
        let location = self.at(entry);
        let value = field.value;
        let non_empty = |what: &'static str, node: &Node, expected| {
            let text = self.text(node, what, expected)?;
            if text.trim().is_empty() {
                return Err(self.err(node, Problem::EmptyValue { what }));
            }
            Ok(text)
        };
        let invalid = |node: &Node, value: &str, reason: String| {
            self.err(
                node,
                Problem::InvalidTarget {
                    value: value.to_owned(),
                    reason,
                },
            )
        };
        Ok(match field.name {
            "cgroup" => {
                let path = non_empty("cgroup", value, "a cgroup path")?;
                if let Some(reason) = crate::policy::targets::cgroup_problem(&path) {
                    return Err(invalid(value, &path, reason));
                }
                Target::Cgroup { path, location }
            }
            "systemd_unit" => {
                let name = non_empty("systemd_unit", value, "a unit name")?;
                if let Some(reason) = crate::policy::targets::unit_problem(&name) {
                    return Err(invalid(value, &name, reason));
                }
                Target::SystemdUnit { name, location }
            }
            _ => {
                let items = self.list(value, "process")?;
                if items.is_empty() {
                    return Err(self.err(value, Problem::EmptyValue { what: "process" }));
                }
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    // `process: [1]` is a number, not an executable name.
                    if !matches!(item.kind, Kind::Str(_)) {
                        return Err(self.wrong_type(item, "a process name", "an executable name"));
                    }
                    let name = non_empty("process", item, "an executable name")?;
                    if let Some(reason) = crate::policy::targets::process_problem(&name) {
                        return Err(invalid(item, &name, reason));
                    }
                    names.push(name);
                }
                Target::Process { names, location }
            }
        })
    }
}
