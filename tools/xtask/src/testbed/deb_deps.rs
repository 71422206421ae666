//! Debian dependency closure over a Packages index (the text `apt-cache dumpavail`
//! prints: one stanza per package, its candidate version): which packages a test bed
//! must unpack so that some root packages' programs find everything they depend on.
//! Pure and host-tested; the caller fetches the index and the `.deb` files.
//!
//! The closure follows `Depends` and `Pre-Depends` (not `Recommends`), ignores version
//! constraints (the index holds the versions `apt-get download` fetches), and picks,
//! for each dependency, an alternative already chosen if there is one, else the first
//! alternative that is a real package, else the first package that `Provides` it.
//! Packages on a stop list count as satisfied without being taken or followed (tools
//! such as `dpkg` that a package's maintainer scripts need, but a test bed never runs).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A parsed Packages index: each package's dependency groups (each a list of
/// alternatives), and who provides each virtual name.
#[derive(Debug, Default)]
pub struct Index {
    depends: BTreeMap<String, Vec<Vec<String>>>,
    providers: BTreeMap<String, BTreeSet<String>>,
}

/// The package name of one alternative: `libc6 (>= 2.34)` → `libc6`,
/// `python3:any` → `python3`; `None` if empty or not a Debian package name.
fn relation_name(alt: &str) -> Option<String> {
    let word = alt.split_whitespace().next()?;
    let word = word.split('(').next().unwrap_or_default();
    let name = word.split(':').next().unwrap_or_default();
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    ok.then(|| name.to_string())
}

/// A relation field (`a (>= 1) | b, c`) as groups of alternatives; unparsable
/// alternatives are dropped (a group left empty is dropped too).
fn relations(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| group.split('|').filter_map(relation_name).collect())
        .filter(|g: &Vec<String>| !g.is_empty())
        .collect()
}

impl Index {
    /// Parses a Packages index. Stanzas are separated by blank lines; fields may
    /// continue on lines that start with a space. A stanza without `Package` is
    /// skipped; a package listed twice gets the union of its dependencies (a safe
    /// over-approximation across versions).
    pub fn parse(text: &str) -> Index {
        let mut index = Index::default();
        for stanza in text.split("\n\n") {
            let mut fields: Vec<(&str, String)> = Vec::new();
            for line in stanza.lines() {
                if line.starts_with([' ', '\t']) {
                    if let Some((_, value)) = fields.last_mut() {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                } else if let Some((key, value)) = line.split_once(':') {
                    fields.push((key.trim(), value.trim().to_string()));
                }
            }
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.as_str())
            };
            let Some(name) = field("Package").and_then(relation_name) else {
                continue;
            };
            let mut groups = Vec::new();
            for key in ["Pre-Depends", "Depends"] {
                groups.extend(field(key).map(relations).unwrap_or_default());
            }
            for virt in field("Provides").map(relations).unwrap_or_default() {
                for v in virt {
                    index.providers.entry(v).or_default().insert(name.clone());
                }
            }
            let known = index.depends.entry(name).or_default();
            for g in groups {
                if !known.contains(&g) {
                    known.push(g);
                }
            }
        }
        index
    }

    /// Whether the index has a real package of this name.
    pub fn has(&self, name: &str) -> bool {
        self.depends.contains_key(name)
    }

    /// The packages `roots` need: the roots and everything their dependencies reach,
    /// sorted by name, less the `stop` packages (counted as satisfied, not followed).
    /// Fails, naming the chain's last link, if a root or a dependency cannot be
    /// satisfied by any package of the index.
    pub fn closure(&self, roots: &[&str], stop: &[&str]) -> Result<Vec<String>, String> {
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<String> = VecDeque::new();
        for root in roots {
            if !self.has(root) {
                return Err(format!("package {root} is not in the package index"));
            }
            if taken.insert(root.to_string()) {
                queue.push_back(root.to_string());
            }
        }
        let satisfied = |taken: &BTreeSet<String>, alt: &str| {
            stop.contains(&alt)
                || taken.contains(alt)
                || self
                    .providers
                    .get(alt)
                    .is_some_and(|p| p.iter().any(|p| taken.contains(p)))
        };
        while let Some(package) = queue.pop_front() {
            for group in self.depends.get(&package).into_iter().flatten() {
                if group.iter().any(|alt| satisfied(&taken, alt)) {
                    continue;
                }
                let pick = group.iter().find(|alt| self.has(alt)).cloned().or_else(|| {
                    group
                        .iter()
                        .find_map(|alt| self.providers.get(alt)?.iter().next().cloned())
                });
                let Some(pick) = pick else {
                    return Err(format!(
                        "{package} depends on {}, which no package in the index provides",
                        group.join(" | ")
                    ));
                };
                if stop.contains(&pick.as_str()) {
                    continue;
                }
                taken.insert(pick.clone());
                queue.push_back(pick);
            }
        }
        Ok(taken.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INDEX: &str = "\
Package: libvirt-daemon-driver-xen
Version: 9.0.0-4
Depends: libvirt-daemon (= 9.0.0-4), libvirt0 (= 9.0.0-4), libc6 (>= 2.34),
 libxenmisc4.17 (>= 4.17.0)
Description: a folded field
 second line: with a colon

Package: libvirt-daemon
Depends: libvirt-daemon-driver-qemu, libvirt0, libc6
Pre-Depends: init-system-helpers (>= 1.54~)

Package: libvirt-daemon-driver-qemu
Depends: qemu-system-x86

Package: libvirt0
Depends: libc6, libsystemd0 | libelogind0, default-dbus-session-bus | dbus-session-bus

Package: libc6
Depends: libgcc-s1

Package: libgcc-s1
Depends: libc6 (>= 2.35)

Package: libxenmisc4.17
Depends: libc6, libyajl2:any

Package: libyajl2

Package: libelogind0
Provides: libsystemd0 (= 252)

Package: dbus-user-session
Provides: default-dbus-session-bus, dbus-session-bus

Package: init-system-helpers
Depends: perl-base
";

    #[test]
    fn closure_follows_depends_and_pre_depends() {
        let index = Index::parse(INDEX);
        let got = index
            .closure(
                &["libvirt-daemon-driver-xen"],
                &["libvirt-daemon-driver-qemu", "init-system-helpers"],
            )
            .unwrap();
        assert_eq!(
            got,
            [
                "dbus-user-session",
                "libc6",
                "libelogind0",
                "libgcc-s1",
                "libvirt-daemon",
                "libvirt-daemon-driver-xen",
                "libvirt0",
                "libxenmisc4.17",
                "libyajl2",
            ]
        );
    }

    #[test]
    fn a_taken_alternative_or_provider_satisfies_a_group() {
        let index = Index::parse(
            "Package: a\nDepends: b | c, v\n\nPackage: b\n\nPackage: c\nProvides: v\n",
        );
        // With `c` a root, it satisfies both `b | c` and (by Provides) `v`.
        assert_eq!(index.closure(&["a", "c"], &[]).unwrap(), ["a", "c"]);
        assert_eq!(index.closure(&["a"], &[]).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn unsatisfiable_dependencies_and_unknown_roots_are_named() {
        let index = Index::parse(INDEX);
        let e = index
            .closure(&["libvirt-daemon"], &["init-system-helpers"])
            .unwrap_err();
        assert!(e.contains("qemu-system-x86"), "{e}");
        assert!(index.closure(&["nonexistent"], &[]).is_err());
    }

    #[test]
    fn relation_names_are_strict() {
        assert_eq!(relation_name(" libc6 (>= 2.34)"), Some("libc6".into()));
        assert_eq!(relation_name("python3:any"), Some("python3".into()));
        assert_eq!(relation_name("libfoo(>=1)"), Some("libfoo".into()));
        assert_eq!(relation_name(""), None);
        assert_eq!(relation_name("Bad_Name"), None);
        assert_eq!(
            relations("a | , , b"),
            vec![vec!["a".to_string()], vec!["b".into()]]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text parses; any closure over it either fails with a message or returns
        /// sorted, unique names that include the roots and that each have a stanza.
        #[test]
        fn hostile_indexes_never_panic(
            text in "(Package: [a-d]{1,2}\n(Depends|Pre-Depends|Provides): [a-d|, ():>=0-9]{0,20}\n( [a-d, ]{0,6}\n)?\n){0,12}",
            noise in proptest::collection::vec(any::<u8>(), 0..200),
            root in "[a-d]{1,2}",
        ) {
            let mut text = text;
            text.push_str(&String::from_utf8_lossy(&noise));
            let index = Index::parse(&text);
            if let Ok(got) = index.closure(&[&root], &["d"]) {
                prop_assert!(got.contains(&root));
                prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(got.iter().all(|p| index.has(p)));
            }
        }

        /// Every dependency group of every taken package is satisfied by the result.
        #[test]
        fn closures_are_closed(
            deps in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0usize..8, 1..3), 0..3),
                8,
            ),
        ) {
            let name = |i: usize| format!("p{i}");
            let text: String = deps
                .iter()
                .enumerate()
                .map(|(i, groups)| {
                    let d: Vec<String> = groups
                        .iter()
                        .map(|g| g.iter().map(|&j| name(j)).collect::<Vec<_>>().join(" | "))
                        .collect();
                    format!("Package: {}\nDepends: {}\n\n", name(i), d.join(", "))
                })
                .collect();
            let index = Index::parse(&text);
            let got = index.closure(&["p0"], &[]).unwrap();
            for p in &got {
                let i: usize = p[1..].parse().unwrap();
                for g in &deps[i] {
                    prop_assert!(g.iter().any(|&j| got.contains(&name(j))), "{p}: {g:?} in {got:?}");
                }
            }
        }
    }
}
