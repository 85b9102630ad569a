//! sluice's own profile catalog, embedded in the binary. The files live in
//! `crates/sluice-policy/profiles/` (written by us from each service's
//! public documentation); `tests/profiles.rs` lints every one.

/// One embedded profile.
#[derive(Clone, Copy, Debug)]
pub struct CatalogEntry {
    pub id: &'static str,
    /// The profile's YAML.
    pub source: &'static str,
}

impl CatalogEntry {
    /// How messages name it: `catalog:ID.yaml`.
    #[must_use]
    pub fn origin(&self) -> String {
        format!("catalog:{}.yaml", self.id)
    }
}

macro_rules! entries {
    ($($id:literal),* $(,)?) => {
        [$(CatalogEntry {
            id: $id,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/", $id, ".yaml")),
        }),*]
    };
}

static CATALOG: &[CatalogEntry] = &entries![
    "anthropic",
    "aws",
    "aws-bedrock",
    "aws-s3",
    "claude-code",
    "codex",
    "copilot",
    "crates-io",
    "cursor",
    "deepinfra",
    "docker-hub",
    "gemini",
    "ghcr",
    "github",
    "gitlab",
    "go-modules",
    "google-cloud",
    "google-vertex-ai",
    "huggingface",
    "maven-central",
    "npm",
    "nvidia",
    "openai",
    "openrouter",
    "pypi",
    "rubygems"
];

/// Every embedded profile, sorted by id.
#[must_use]
pub fn catalog() -> &'static [CatalogEntry] {
    CATALOG
}
