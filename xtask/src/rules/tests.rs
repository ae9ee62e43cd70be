//! Tests of the architecture rules on synthetic workspaces: a clean one passes, and each rule
//! catches a workspace built to break it.

use std::collections::BTreeMap;

use super::{
    CRATE_DEV_EDGES, CRATE_EDGES, CRATE_EDGES_RULE, DOMAIN, DOMAIN_ALLOWLIST_RULE, FAKE_UPSTREAM,
    FILE_HEADER_RULE, RULES, TEST_ATTRIBUTES_RULE, TEST_SUPPORT, UNFINISHED_CODE_RULE,
    VAGUE_NAMES_RULE, Violation, WORKSPACE_DEPS_RULE, WORKSPACE_LINTS_RULE, check, vague_word,
    word_parts,
};
use crate::model::{Dep, DepKind, Manifest, Package, SourceFile, Workspace};

const APPLICATION: &str = "echelon-application";
const CONFIG: &str = "echelon-config";
const INFRASTRUCTURE: &str = "echelon-infrastructure";
const INTERFACES: &str = "echelon-interfaces";

fn package(name: &str, member: bool, deps: Vec<Dep>) -> Package {
    Package {
        id: name.to_owned(),
        name: name.to_owned(),
        member,
        deps,
        features: BTreeMap::new(),
    }
}

fn dep(name: &str) -> Dep {
    Dep::new(name, DepKind::Normal, Some(name))
}

fn dev_dep(name: &str) -> Dep {
    Dep::new(name, DepKind::Dev, Some(name))
}

fn optional(name: &str) -> Dep {
    Dep {
        optional: true,
        ..dep(name)
    }
}

fn features(items: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    items
        .iter()
        .map(|(name, enables)| {
            let enables = enables.iter().map(|s| (*s).to_owned()).collect();
            ((*name).to_owned(), enables)
        })
        .collect()
}

fn manifest(package: &str, text: &str) -> Manifest {
    Manifest {
        path: format!("crates/{package}/Cargo.toml"),
        text: text.to_owned(),
    }
}

const CLEAN_MANIFEST: &str = r#"
[package]
name = "member"
version.workspace = true
edition.workspace = true

[lints]
workspace = true

[features]
serde = ["dep:serde"]

[dependencies]
thiserror.workspace = true
serde = { workspace = true, optional = true, features = ["derive"] }

[dev-dependencies]
proptest = { workspace = true }

[target.'cfg(unix)'.dependencies]
futures-core.workspace = true
"#;

fn source(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.to_owned(),
        text: text.to_owned(),
    }
}

/// A workspace that follows every rule: the real layering, a domain on allowlisted crates with
/// optional features and dev-dependencies that would be denied if they counted, clean manifests
/// and clean sources that mention every forbidden thing only in comments and strings.
fn clean() -> Workspace {
    let mut domain = package(
        DOMAIN,
        true,
        vec![
            dep("thiserror"),
            optional("serde"),
            optional("syn"),
            dev_dep("tokio"),
            dev_dep(DOMAIN),
        ],
    );
    domain.features = features(&[("serde", &["dep:serde"]), ("parsing", &["dep:syn"])]);
    let mut syn = package(
        "syn",
        false,
        vec![Dep {
            default_features: false,
            ..dep("quote")
        }],
    );
    syn.features = features(&[("nightly", &[])]);
    let mut quote = package("quote", false, vec![optional("regex")]);
    // Some other member switches `regex` on; the domain does not, so it must not count.
    quote.features = features(&[("default", &["regex"]), ("regex", &["dep:regex"])]);
    let mut workspace = Workspace {
        packages: vec![
            domain,
            package(
                CONFIG,
                true,
                vec![dep(DOMAIN), dep("toml"), dev_dep(DOMAIN)],
            ),
            package(
                APPLICATION,
                true,
                vec![dep(DOMAIN), dep("tokio"), dev_dep(DOMAIN)],
            ),
            package(
                INFRASTRUCTURE,
                true,
                vec![dep(DOMAIN), dep(APPLICATION), dev_dep(FAKE_UPSTREAM)],
            ),
            package(
                FAKE_UPSTREAM,
                true,
                vec![dep(DOMAIN), dep(INFRASTRUCTURE), dep("tokio")],
            ),
            package(
                INTERFACES,
                true,
                vec![
                    dep(DOMAIN),
                    dep(CONFIG),
                    dep(APPLICATION),
                    dep(INFRASTRUCTURE),
                    dep(FAKE_UPSTREAM),
                    dev_dep(INFRASTRUCTURE),
                ],
            ),
            package("xtask", true, vec![dep("anyhow")]),
            package("thiserror", false, vec![dep("thiserror-impl")]),
            package("thiserror-impl", false, vec![]),
            package("serde", false, vec![]),
            syn,
            quote,
            package("regex", false, vec![]),
            package("tokio", false, vec![]),
            package("toml", false, vec![]),
            package("anyhow", false, vec![]),
        ],
        manifests: Vec::new(),
        sources: vec![
            source(
                "crates/domain/src/lib.rs",
                "//! The domain.\n\
                 \n\
                 // A comment may say SmartPool, todo!() and #[ignore].\n\
                 /// So may a doc comment: `unimplemented!()`, #[should_panic].\n\
                 pub struct WeightedPool;\n\
                 pub fn describe() -> &'static str { \"an UnifiedPool todo!() #[ignore]\" }\n\
                 pub fn smartphone_count(todo: usize) -> usize { todo }\n",
            ),
            source(
                "crates/domain/tests/it/main.rs",
                "//! Integration tests.\n#[test]\n#[cfg_attr(miri, allow(unused))]\nfn picks() {}\n",
            ),
        ],
    };
    workspace.manifests = workspace
        .members()
        .map(|p| manifest(&p.name, CLEAN_MANIFEST))
        .collect();
    workspace
}

fn member_mut<'w>(workspace: &'w mut Workspace, name: &str) -> &'w mut Package {
    workspace
        .packages
        .iter_mut()
        .find(|p| p.name == name)
        .expect("package exists")
}

fn with_source(text: &str) -> Vec<Violation> {
    let mut workspace = clean();
    workspace
        .sources
        .push(source("crates/application/src/route.rs", text));
    check(&workspace)
}

fn with_manifest(text: &str) -> Vec<Violation> {
    let mut workspace = clean();
    workspace.manifests[1] = manifest(CONFIG, text);
    check(&workspace)
}

/// Asserts that exactly the `expected` rules fired (in any order) and returns the violations.
fn fired(violations: Vec<Violation>, expected: &[&str]) -> Vec<Violation> {
    let mut rules: Vec<&str> = violations.iter().map(|v| v.rule).collect();
    rules.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(rules, want, "violations: {violations:#?}");
    violations
}

#[test]
fn a_clean_workspace_passes() {
    let workspace = clean();
    assert!(!workspace.sources.is_empty() && !workspace.manifests.is_empty());
    assert_eq!(check(&workspace), []);
}

/// The four demonstrations of issue #2: each is caught, with the rule's name in the output.
#[test]
fn the_four_demonstrations_are_caught() {
    let mut tokio_in_domain = clean();
    member_mut(&mut tokio_in_domain, DOMAIN)
        .deps
        .push(dep("tokio"));

    let mut infrastructure_in_application = clean();
    member_mut(&mut infrastructure_in_application, APPLICATION)
        .deps
        .push(dep(INFRASTRUCTURE));

    let cases = [
        (
            "tokio added to domain",
            check(&tokio_in_domain),
            DOMAIN_ALLOWLIST_RULE,
        ),
        (
            "echelon-infrastructure as a dependency of echelon-application",
            check(&infrastructure_in_application),
            CRATE_EDGES_RULE,
        ),
        (
            "a type named SmartPool",
            with_source("//! Pools.\npub struct SmartPool;\n"),
            VAGUE_NAMES_RULE,
        ),
        (
            "a todo!()",
            with_source("//! Routing.\npub fn route() {\n    todo!()\n}\n"),
            UNFINISHED_CODE_RULE,
        ),
    ];
    for (case, violations, rule) in cases {
        let violations = fired(violations, &[rule]);
        println!("{case}:\n{}", violations[0]);
    }
}

#[test]
fn crate_edges_catch_a_forbidden_normal_edge() {
    let mut workspace = clean();
    member_mut(&mut workspace, APPLICATION)
        .deps
        .push(dep(INFRASTRUCTURE));
    let violations = fired(check(&workspace), &[CRATE_EDGES_RULE]);
    assert_eq!(violations[0].place, APPLICATION);
    assert_eq!(
        violations[0].message,
        "depends on echelon-infrastructure (normal dependency), but it may only depend on \
         echelon-domain"
    );
}

#[test]
fn crate_edges_catch_build_and_dev_edges_against_the_table() {
    let mut workspace = clean();
    member_mut(&mut workspace, INFRASTRUCTURE)
        .deps
        .push(Dep::new(INTERFACES, DepKind::Build, Some(INTERFACES)));
    member_mut(&mut workspace, CONFIG)
        .deps
        .push(dev_dep(APPLICATION));
    member_mut(&mut workspace, "xtask").deps.push(dep(DOMAIN));
    let violations = fired(
        check(&workspace),
        &[CRATE_EDGES_RULE, CRATE_EDGES_RULE, CRATE_EDGES_RULE],
    );
    let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
    assert!(messages.contains(
        &"depends on echelon-interfaces (build dependency), but it may only depend on \
          echelon-domain, echelon-application"
    ));
    assert!(messages.contains(
        &"depends on echelon-application (dev-dependency), but it may only depend on echelon-domain"
    ));
    assert!(messages.contains(
        &"depends on echelon-domain (normal dependency), but it may only depend on no workspace crate"
    ));
}

#[test]
fn crate_edges_keep_the_fake_upstream_a_test_tool() {
    let mut workspace = clean();
    // The adapters' tests may run against it, the adapters themselves may not use it, and the
    // use cases' tests may not either (only the crates of CRATE_DEV_EDGES may).
    member_mut(&mut workspace, INFRASTRUCTURE)
        .deps
        .push(dep(FAKE_UPSTREAM));
    member_mut(&mut workspace, APPLICATION)
        .deps
        .push(dev_dep(FAKE_UPSTREAM));
    let violations = fired(check(&workspace), &[CRATE_EDGES_RULE, CRATE_EDGES_RULE]);
    let messages: Vec<(&str, &str)> = violations
        .iter()
        .map(|v| (v.place.as_str(), v.message.as_str()))
        .collect();
    assert!(messages.contains(&(
        INFRASTRUCTURE,
        "depends on echelon-fake-upstream (normal dependency), but it may only depend on \
         echelon-domain, echelon-application"
    )));
    assert!(messages.contains(&(
        APPLICATION,
        "depends on echelon-fake-upstream (dev-dependency), but it may only depend on \
         echelon-domain (and, as a dev-dependency, echelon-test-support)"
    )));
}

#[test]
fn crate_edges_catch_a_member_missing_from_the_table() {
    let mut workspace = clean();
    workspace
        .packages
        .push(package("echelon-telemetry", true, vec![dep(DOMAIN)]));
    let violations = fired(check(&workspace), &[CRATE_EDGES_RULE]);
    assert_eq!(violations[0].place, "echelon-telemetry");
    assert!(
        violations[0]
            .message
            .contains("no row in the crate-edge table")
    );
}

#[test]
fn the_edge_table_is_the_one_of_the_design() {
    let table: Vec<(&str, usize)> = CRATE_EDGES.iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(
        table,
        [
            (DOMAIN, 0),
            (CONFIG, 1),
            (APPLICATION, 1),
            (INFRASTRUCTURE, 2),
            (FAKE_UPSTREAM, 2),
            (TEST_SUPPORT, 1),
            (INTERFACES, 5),
            ("xtask", 0),
            ("xtask-bench", 0)
        ]
    );
    // Only test tools are dev-only edges: the shared topologies (and the redis-server
    // launcher) for the crates' tests, the fake upstream for the adapters.
    assert_eq!(
        CRATE_DEV_EDGES,
        [
            (DOMAIN, &[TEST_SUPPORT][..]),
            (APPLICATION, &[TEST_SUPPORT][..]),
            (INFRASTRUCTURE, &[FAKE_UPSTREAM, TEST_SUPPORT][..]),
            (INTERFACES, &[TEST_SUPPORT][..]),
        ]
    );
}

#[test]
fn domain_allowlist_names_denied_crates_with_their_reason() {
    let mut workspace = clean();
    member_mut(&mut workspace, DOMAIN).deps.push(dep("tokio"));
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert_eq!(violations[0].place, DOMAIN);
    assert_eq!(
        violations[0].message,
        "builds on `tokio`, which the domain must never use (via echelon-domain -> tokio)"
    );
    assert!(violations[0].fix.contains("no async runtime"));
}

#[test]
fn domain_allowlist_follows_transitive_dependencies() {
    let mut workspace = clean();
    workspace
        .packages
        .push(package("opentelemetry_sdk", false, vec![]));
    member_mut(&mut workspace, "thiserror-impl")
        .deps
        .push(dep("opentelemetry_sdk"));
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert_eq!(
        violations[0].message,
        "builds on `opentelemetry_sdk`, which the domain must never use \
         (via echelon-domain -> thiserror -> thiserror-impl -> opentelemetry_sdk)"
    );
}

#[test]
fn domain_allowlist_reports_a_denied_crate_without_its_whole_graph() {
    let mut workspace = clean();
    workspace.packages.push(package("mio", false, vec![]));
    member_mut(&mut workspace, "tokio").deps.push(dep("mio"));
    member_mut(&mut workspace, DOMAIN).deps.push(dep("tokio"));
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert!(violations[0].message.contains("`tokio`"));

    // Reached through an allowed crate as well, `mio` is a violation of its own.
    member_mut(&mut workspace, "thiserror")
        .deps
        .push(dep("mio"));
    let violations = fired(
        check(&workspace),
        &[DOMAIN_ALLOWLIST_RULE, DOMAIN_ALLOWLIST_RULE],
    );
    assert!(violations.iter().any(|v| v.message.contains(
        "`mio`, which is not on the allowlist (via echelon-domain -> thiserror -> mio)"
    )));
}

#[test]
fn domain_allowlist_catches_a_crate_that_is_not_listed() {
    let mut workspace = clean();
    workspace.packages.push(package("rand", false, vec![]));
    member_mut(&mut workspace, DOMAIN).deps.push(dep("rand"));
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert!(
        violations[0]
            .message
            .contains("`rand`, which is not on the allowlist")
    );
    assert!(violations[0].fix.contains("DOMAIN_ALLOWLIST"));
}

#[test]
fn domain_allowlist_enables_every_feature_of_the_domain() {
    let mut workspace = clean();
    let domain = member_mut(&mut workspace, DOMAIN);
    domain.deps.push(optional("tokio"));
    domain
        .features
        .insert("runtime".to_owned(), vec!["dep:tokio".to_owned()]);
    fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
}

#[test]
fn domain_allowlist_follows_features_of_dependencies() {
    // The domain asks quote' default features, whose `regex` pulls in an unlisted crate.
    let mut workspace = clean();
    member_mut(&mut workspace, "syn").deps[0].default_features = true;
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert!(violations[0].message.contains("`regex`"));

    // `dep/feature` from the domain's own feature table.
    let mut workspace = clean();
    member_mut(&mut workspace, DOMAIN)
        .features
        .insert("fancy".to_owned(), vec!["syn/regex-please".to_owned()]);
    member_mut(&mut workspace, "syn").features = features(&[("regex-please", &["quote/regex"])]);
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert!(violations[0].message.contains("`regex`"));
}

#[test]
fn domain_allowlist_resolves_weak_features_only_when_the_dependency_is_on() {
    let mut workspace = clean();
    member_mut(&mut workspace, "serde")
        .deps
        .push(optional("anyhow"));
    member_mut(&mut workspace, "serde").features = features(&[("anyhow", &["dep:anyhow"])]);
    // `serde?/anyhow`: serde is switched on by the domain's `serde` feature, so this counts.
    member_mut(&mut workspace, DOMAIN)
        .features
        .insert("glue".to_owned(), vec!["serde?/anyhow".to_owned()]);
    let violations = fired(check(&workspace), &[DOMAIN_ALLOWLIST_RULE]);
    assert!(violations[0].message.contains("`anyhow`"));

    // Through a dependency that nothing switches on, the weak feature stays off.
    let mut workspace = clean();
    workspace
        .packages
        .push(package("serde_json", false, vec![optional("anyhow")]));
    member_mut(&mut workspace, "serde_json").features = features(&[("anyhow", &["dep:anyhow"])]);
    member_mut(&mut workspace, "thiserror")
        .deps
        .push(optional("serde_json"));
    member_mut(&mut workspace, "thiserror").features =
        features(&[("default", &["serde_json?/anyhow"])]);
    assert_eq!(check(&workspace), []);
}

#[test]
fn domain_allowlist_ignores_dev_dependencies_and_their_graph() {
    let mut workspace = clean();
    member_mut(&mut workspace, DOMAIN)
        .deps
        .push(dev_dep("anyhow"));
    member_mut(&mut workspace, "thiserror")
        .deps
        .push(dev_dep("tokio"));
    assert_eq!(check(&workspace), []);
}

#[test]
fn domain_allowlist_fails_when_the_domain_is_missing() {
    let mut workspace = clean();
    member_mut(&mut workspace, DOMAIN).member = false;
    let violations = check(&workspace);
    assert!(
        violations.iter().any(
            |v| v.rule == DOMAIN_ALLOWLIST_RULE && v.message.contains("not a workspace member")
        )
    );
}

#[test]
fn workspace_deps_catch_own_versions_and_paths() {
    let text = CLEAN_MANIFEST.to_owned()
        + r#"
[build-dependencies]
cc = "1"
local = { path = "../local" }
tokio = { workspace = true, version = "1" }
bytes = { workspace = false }
"#;
    let violations = fired(
        with_manifest(&text),
        &[
            WORKSPACE_DEPS_RULE,
            WORKSPACE_DEPS_RULE,
            WORKSPACE_DEPS_RULE,
            WORKSPACE_DEPS_RULE,
        ],
    );
    let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "[build-dependencies] `bytes` is declared on its own (workspace) instead of \
             `workspace = true`",
            "[build-dependencies] `cc` declares its own version (\"1\") instead of \
             `workspace = true`",
            "[build-dependencies] `local` is declared on its own (path) instead of \
             `workspace = true`",
            "[build-dependencies] `tokio` adds `version` next to `workspace = true`",
        ]
    );
    assert_eq!(violations[0].place, "crates/echelon-config/Cargo.toml");
}

#[test]
fn workspace_deps_look_into_target_tables() {
    let text = CLEAN_MANIFEST.replace(
        "futures-core.workspace = true",
        "futures-core = { version = \"0.3\", default-features = false }",
    );
    let violations = fired(with_manifest(&text), &[WORKSPACE_DEPS_RULE]);
    assert!(
        violations[0]
            .message
            .starts_with("[target.'cfg(unix)'.dependencies] `futures-core`")
    );
}

#[test]
fn workspace_deps_report_an_unparsable_manifest() {
    fired(with_manifest("[package\nname = "), &[WORKSPACE_DEPS_RULE]);
}

#[test]
fn workspace_lints_are_required() {
    let without = CLEAN_MANIFEST.replace("[lints]\nworkspace = true\n", "");
    let violations = fired(with_manifest(&without), &[WORKSPACE_LINTS_RULE]);
    assert!(violations[0].message.contains("no [lints]"));

    let off = CLEAN_MANIFEST.replace("[lints]\nworkspace = true", "[lints]\nworkspace = false");
    fired(with_manifest(&off), &[WORKSPACE_LINTS_RULE]);

    let own = CLEAN_MANIFEST.replace(
        "[lints]\nworkspace = true",
        "[lints]\nworkspace = true\n[lints.clippy]\ntodo = \"allow\"",
    );
    let violations = fired(with_manifest(&own), &[WORKSPACE_LINTS_RULE]);
    assert!(violations[0].message.contains("clippy"));
}

#[test]
fn vague_names_catch_every_spelling() {
    let violations = fired(
        with_source(
            "//! Names.\n\
             pub struct SmartPool;\n\
             fn enhanced_retry() {}\n\
             const UNIFIED_LIMIT: u32 = 1;\n\
             fn isAdvanced() {}\n\
             struct HTTPIntelligentRouter;\n\
             fn again() { let _ = SmartPool; }\n",
        ),
        &[VAGUE_NAMES_RULE; 5],
    );
    let places: Vec<&str> = violations.iter().map(|v| v.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "crates/application/src/route.rs:2",
            "crates/application/src/route.rs:3",
            "crates/application/src/route.rs:4",
            "crates/application/src/route.rs:5",
            "crates/application/src/route.rs:6",
        ]
    );
    assert_eq!(
        violations[0].message,
        "identifier `SmartPool` is built on the vague word `Smart`"
    );
}

#[test]
fn word_parts_split_camel_snake_and_acronyms() {
    assert_eq!(word_parts("SmartPool"), ["Smart", "Pool"]);
    assert_eq!(word_parts("smart_pool"), ["smart", "pool"]);
    assert_eq!(word_parts("HTTPServer2Go"), ["HTTP", "Server", "2", "Go"]);
    assert_eq!(word_parts("__private"), ["private"]);
    assert_eq!(vague_word("r2Advanced"), Some("Advanced"));
    assert_eq!(vague_word("Smartphone"), None);
    assert_eq!(vague_word("unification"), None);
}

#[test]
fn unfinished_code_catches_both_macros_in_any_form() {
    let violations = fired(
        with_source(
            "//! Work.\n\
             fn a() { todo!() }\n\
             fn b() { unimplemented!(\"later\") }\n\
             fn c() { std::todo! {} }\n",
        ),
        &[UNFINISHED_CODE_RULE; 3],
    );
    assert_eq!(violations[1].place, "crates/application/src/route.rs:3");
    assert_eq!(
        violations[1].message,
        "`unimplemented!` marks unfinished code"
    );
}

#[test]
fn test_attributes_catch_ignore_and_should_panic() {
    let violations = fired(
        with_source(
            "//! Tests.\n\
             #[test] #[ignore] fn a() {}\n\
             #[test] #[ignore = \"slow\"] fn b() {}\n\
             #[test] #[should_panic(expected = \"boom\")] fn c() {}\n\
             #[test] #[cfg_attr(not(feature = \"slow\"), ignore)] fn d() {}\n\
             #[test] # [ ignore ] fn e() {}\n",
        ),
        &[TEST_ATTRIBUTES_RULE; 5],
    );
    assert_eq!(violations[2].message, "`#[should_panic]` on a test");
    assert!(violations[2].fix.contains("assert on the returned error"));
}

#[test]
fn file_header_requires_a_module_doc_line_first() {
    for text in [
        "",
        "\n//! Late.\n",
        "// A plain comment.\n",
        "/// An item doc.\nfn f() {}\n",
    ] {
        let violations = fired(with_source(text), &[FILE_HEADER_RULE]);
        assert_eq!(violations[0].place, "crates/application/src/route.rs:1");
    }
    fired(with_source("//! Fine.\n"), &[]);
}

#[test]
fn violations_print_rule_place_message_and_fix() {
    let violations = with_source("//! Pools.\npub struct SmartPool;\n");
    assert_eq!(
        violations[0].to_string(),
        "[vague-names] crates/application/src/route.rs:2: identifier `SmartPool` is built on the \
         vague word `Smart`\n    fix: name it after what it does or holds (e.g. `WeightedPool`, \
         `retry_with_backoff`); see STYLE.md, Naming"
    );
}

#[test]
fn every_listed_rule_fires_on_a_workspace_that_breaks_them_all() {
    let mut workspace = clean();
    member_mut(&mut workspace, DOMAIN).deps.push(dep("tokio"));
    member_mut(&mut workspace, APPLICATION)
        .deps
        .push(dep(INFRASTRUCTURE));
    workspace.manifests[0] = manifest(DOMAIN, "[dependencies]\ntokio = \"1\"\n");
    workspace.sources.push(source(
        "crates/domain/src/pool.rs",
        "pub struct SmartPool;\nfn f() { todo!() }\n#[test] #[ignore] fn t() {}\n",
    ));
    let violations = check(&workspace);
    for (rule, _) in RULES {
        assert!(
            violations.iter().any(|v| v.rule == *rule),
            "{rule} did not fire: {violations:#?}"
        );
    }
    assert_eq!(violations.len(), RULES.len());
}
