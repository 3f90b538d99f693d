//! The layering of docs/ARCHITECTURE.md, checked from `cargo metadata`: dependencies point
//! downward only, and each outside technology stays inside the one layer that owns it.
//!
//! Only normal dependencies count. Dev-dependencies may reach further, because tests of a lower
//! layer legitimately use test support (real servers, databases) that the code itself must not.

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::process;

/// Library crates and the workspace crates each may depend on, lowest layer first. A new library
/// crate must be added here, which is the moment to decide where it sits.
const LIBRARIES: &[(&str, &[&str])] = &[
    ("plugs_domain", &[]),
    // Pure like the domain: image rules over bytes, beside it at the bottom.
    ("plugs_imaging", &[]),
    ("plugs_storage", &[]),
    ("plugs_persistence", &["plugs_domain"]),
    (
        "plugs_media",
        &[
            "plugs_domain",
            "plugs_imaging",
            "plugs_storage",
            "plugs_persistence",
        ],
    ),
];

/// Library crates that do no I/O and no async: rules over plain data and bytes.
const PURE: &[&str] = &["plugs_domain", "plugs_imaging"];

/// Test harness crate: a dev-dependency of others, free to use anything a test needs.
const TEST_SUPPORT: &str = "plugs_test_support";

/// Where a workspace crate sits, which decides what it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Library,
    TestSupport,
    /// Anything under `bin/`: the only place that wires everything together.
    Binary,
    Xtask,
    /// A library crate missing from [`LIBRARIES`].
    Unplaced,
}

#[derive(Debug)]
struct Crate {
    name: String,
    role: Role,
    /// Normal (non-dev, non-build) dependencies.
    deps: Vec<Dep>,
}

#[derive(Debug)]
struct Dep {
    name: String,
    /// A member of this workspace rather than a crate from a registry.
    in_workspace: bool,
}

/// One dependency a crate must not have, and why.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    krate: String,
    dep: String,
    why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dep.is_empty() {
            write!(f, "{}: {}", self.krate, self.why)
        } else {
            write!(f, "{} -> {}: {}", self.krate, self.dep, self.why)
        }
    }
}

/// `cargo xtask layers`: prints every violation and fails if there is one.
pub(crate) fn run() -> Result<()> {
    let crates = workspace_crates(&process::metadata()?)?;
    let violations = check(&crates);
    if violations.is_empty() {
        println!(
            "layers: {} workspace crates, every dependency points downward",
            crates.len()
        );
        return Ok(());
    }
    for violation in &violations {
        println!("  {violation}");
    }
    bail!(
        "{} layering violation(s); the layers are described in docs/ARCHITECTURE.md",
        violations.len()
    )
}

/// The workspace members of `cargo metadata --no-deps` with their normal dependencies.
fn workspace_crates(metadata: &Value) -> Result<Vec<Crate>> {
    let root = metadata["workspace_root"]
        .as_str()
        .context("cargo metadata has no workspace_root")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut crates = Vec::new();
    for package in packages {
        let name = package["name"]
            .as_str()
            .context("a package without a name")?;
        let manifest = package["manifest_path"]
            .as_str()
            .context("a package without a manifest_path")?;
        let relative = Path::new(manifest)
            .strip_prefix(root)
            .unwrap_or(Path::new(manifest));
        let deps = package["dependencies"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|dep| dep["kind"].is_null())
            .filter_map(|dep| {
                let dep_name = dep["name"].as_str()?;
                Some(Dep {
                    name: dep_name.to_string(),
                    in_workspace: dep["path"].is_string() && members.contains(&dep_name),
                })
            })
            .collect();
        crates.push(Crate {
            name: name.to_string(),
            role: role_of(name, relative),
            deps,
        });
    }
    Ok(crates)
}

fn role_of(name: &str, relative_manifest: &Path) -> Role {
    if relative_manifest.starts_with("bin") {
        Role::Binary
    } else if relative_manifest.starts_with("xtask") {
        Role::Xtask
    } else if name == TEST_SUPPORT {
        Role::TestSupport
    } else if LIBRARIES.iter().any(|(library, _)| *library == name) {
        Role::Library
    } else {
        Role::Unplaced
    }
}

fn check(crates: &[Crate]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for krate in crates {
        if krate.role == Role::Unplaced {
            violations.push(Violation {
                krate: krate.name.clone(),
                dep: String::new(),
                why: "has no place in the layering: add it to LIBRARIES in xtask/src/layers.rs"
                    .to_string(),
            });
        }
        for dep in &krate.deps {
            let why = if dep.in_workspace {
                workspace_dep_violation(krate, dep, crates)
            } else {
                outside_dep_violation(krate, &dep.name)
            };
            if let Some(why) = why {
                violations.push(Violation {
                    krate: krate.name.clone(),
                    dep: dep.name.clone(),
                    why,
                });
            }
        }
    }
    violations
}

fn workspace_dep_violation(krate: &Crate, dep: &Dep, crates: &[Crate]) -> Option<String> {
    let dep_role = crates
        .iter()
        .find(|c| c.name == dep.name)
        .map(|c| c.role.clone());
    match (&krate.role, dep_role) {
        (_, Some(Role::Binary | Role::Xtask)) => {
            Some("nothing depends on a binary or on xtask".to_string())
        }
        (_, Some(Role::TestSupport)) => Some(format!(
            "{TEST_SUPPORT} is for tests: a dev-dependency only"
        )),
        (Role::Xtask, _) => {
            Some("xtask uses no workspace crate, so it builds in seconds".to_string())
        }
        (Role::Library, _) => {
            let allowed = LIBRARIES
                .iter()
                .find(|(library, _)| *library == krate.name)
                .map_or(&[][..], |(_, allowed)| *allowed);
            if allowed.contains(&dep.name.as_str()) {
                None
            } else if allowed.is_empty() {
                Some(format!("{} depends on no workspace crate", krate.name))
            } else {
                Some(format!(
                    "{} may depend only on {}",
                    krate.name,
                    allowed.join(", ")
                ))
            }
        }
        (Role::Binary | Role::TestSupport | Role::Unplaced, _) => None,
    }
}

/// Outside technologies, each confined to the layer that owns it.
fn outside_dep_violation(krate: &Crate, dep: &str) -> Option<String> {
    let name = krate.name.as_str();
    let role = &krate.role;
    if dep.contains("actix") && *role != Role::Binary {
        return Some("only bin/ knows actix-web; libraries stay usable without it".to_string());
    }
    if dep.starts_with("diesel") && !matches!(name, "plugs_persistence" | TEST_SUPPORT) {
        return Some("only plugs_persistence knows Diesel".to_string());
    }
    if dep == "anyhow" && !matches!(role, Role::Binary | Role::Xtask | Role::TestSupport) {
        return Some(
            "anyhow only in bin/, xtask and tests: a library returns its own error enum"
                .to_string(),
        );
    }
    if dep.starts_with("aws-")
        && matches!(name, "plugs_domain" | "plugs_persistence" | "plugs_media")
    {
        return Some("only plugs_storage talks to S3; others go through ObjectStore".to_string());
    }
    let io_or_async = ["tokio", "futures", "async-trait", "reqwest", "hyper"];
    if PURE.contains(&name) && io_or_async.iter().any(|prefix| dep.starts_with(prefix)) {
        return Some(format!("{name} is pure: no I/O, no async"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krate(name: &str, role: Role, deps: &[&str], workspace: &[&str]) -> Crate {
        let mut all: Vec<Dep> = deps
            .iter()
            .map(|d| Dep {
                name: (*d).to_string(),
                in_workspace: false,
            })
            .collect();
        all.extend(workspace.iter().map(|d| Dep {
            name: (*d).to_string(),
            in_workspace: true,
        }));
        Crate {
            name: name.to_string(),
            role,
            deps: all,
        }
    }

    fn the_workspace() -> Vec<Crate> {
        vec![
            krate("plugs_domain", Role::Library, &["serde", "uuid"], &[]),
            krate("plugs_imaging", Role::Library, &["image", "thiserror"], &[]),
            krate(
                "plugs_storage",
                Role::Library,
                &["aws-sdk-s3", "tokio"],
                &[],
            ),
            krate(
                "plugs_persistence",
                Role::Library,
                &["diesel", "tokio"],
                &["plugs_domain"],
            ),
            krate(
                "plugs_media",
                Role::Library,
                &["tokio"],
                &["plugs_domain", "plugs_storage", "plugs_persistence"],
            ),
            krate(TEST_SUPPORT, Role::TestSupport, &["anyhow", "diesel"], &[]),
            krate(
                "plugs-api",
                Role::Binary,
                &["actix-web", "anyhow"],
                &["plugs_media", "plugs_storage"],
            ),
            krate("xtask", Role::Xtask, &["anyhow", "serde_json"], &[]),
        ]
    }

    fn violations_with(changed: Crate) -> Vec<String> {
        let mut crates = the_workspace();
        let slot = crates.iter_mut().find(|c| c.name == changed.name);
        match slot {
            Some(slot) => *slot = changed,
            None => crates.push(changed),
        }
        check(&crates).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_intended_layering_has_no_violations() {
        assert_eq!(check(&the_workspace()), vec![]);
    }

    #[test]
    fn an_upward_or_sideways_workspace_dependency_is_reported() {
        let found = violations_with(krate(
            "plugs_persistence",
            Role::Library,
            &[],
            &["plugs_domain", "plugs_storage"],
        ));
        assert_eq!(
            found,
            vec![
                "plugs_persistence -> plugs_storage: plugs_persistence may depend only on plugs_domain"
            ]
        );
    }

    #[test]
    fn technologies_outside_their_layer_are_reported() {
        let found = violations_with(krate(
            "plugs_media",
            Role::Library,
            &["diesel", "aws-sdk-s3", "actix-web", "anyhow"],
            &["plugs_domain"],
        ));
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].contains("Diesel"), "{found:#?}");
        assert!(found[1].contains("S3"), "{found:#?}");
        assert!(found[2].contains("actix-web"), "{found:#?}");
        assert!(found[3].contains("anyhow"), "{found:#?}");
    }

    #[test]
    fn the_domain_stays_free_of_async_runtimes() {
        let found = violations_with(krate("plugs_domain", Role::Library, &["tokio"], &[]));
        assert_eq!(
            found,
            vec!["plugs_domain -> tokio: plugs_domain is pure: no I/O, no async"]
        );
    }

    #[test]
    fn the_imaging_crate_stays_pure_and_apart() {
        let found = violations_with(krate(
            "plugs_imaging",
            Role::Library,
            &["tokio"],
            &["plugs_storage"],
        ));
        assert_eq!(
            found,
            vec![
                "plugs_imaging -> tokio: plugs_imaging is pure: no I/O, no async",
                "plugs_imaging -> plugs_storage: plugs_imaging depends on no workspace crate",
            ]
        );
    }

    #[test]
    fn test_support_as_a_normal_dependency_is_reported() {
        let found = violations_with(krate(
            "plugs-api",
            Role::Binary,
            &[],
            &["plugs_media", TEST_SUPPORT],
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("dev-dependency only"), "{found:#?}");
    }

    #[test]
    fn a_new_library_crate_must_be_given_a_layer() {
        let found = violations_with(krate("plugs_thumbnails", Role::Unplaced, &[], &[]));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("plugs_thumbnails: has no place"),
            "{found:#?}"
        );
    }

    #[test]
    fn metadata_is_read_with_dev_dependencies_ignored() {
        let metadata = serde_json::json!({
            "workspace_root": "/w",
            "packages": [
                {
                    "name": "plugs_domain",
                    "manifest_path": "/w/crates/plugs_domain/Cargo.toml",
                    "dependencies": [
                        {"name": "serde", "kind": null},
                        {"name": "tokio", "kind": "dev"}
                    ]
                },
                {
                    "name": "plugs-api",
                    "manifest_path": "/w/bin/plugs-api/Cargo.toml",
                    "dependencies": [
                        {"name": "plugs_domain", "kind": null, "path": "/w/crates/plugs_domain"},
                        {"name": "actix-web", "kind": null}
                    ]
                }
            ]
        });
        let crates = workspace_crates(&metadata).unwrap();
        assert_eq!(crates[0].role, Role::Library);
        assert_eq!(crates[0].deps.len(), 1, "the dev-dependency is not counted");
        assert_eq!(crates[1].role, Role::Binary);
        assert!(crates[1].deps[0].in_workspace);
        assert!(!crates[1].deps[1].in_workspace);
        assert_eq!(check(&crates), vec![]);
    }
}
