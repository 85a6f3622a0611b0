//! The templates this builder knows how to make: which Debian suite and packages go into each.

/// What a template's root filesystem is bootstrapped from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecipe {
    pub name: &'static str,
    pub suite: &'static str,
    pub mirror: &'static str,
    /// debootstrap `--variant`.
    pub variant: &'static str,
    /// Packages added with `--include`, on top of the variant's own set.
    pub packages: &'static [&'static str],
}

/// The default template: Debian bookworm minbase with Python, git, curl and iproute2.
pub const MINIMAL: TemplateRecipe = TemplateRecipe {
    name: crate::images::DEFAULT_TEMPLATE,
    suite: "bookworm",
    mirror: "http://deb.debian.org/debian",
    variant: "minbase",
    packages: &[
        "python3",
        "bash",
        "coreutils",
        "procps",
        "curl",
        "ca-certificates",
        "git",
        "iproute2",
    ],
};

const RECIPES: &[TemplateRecipe] = &[MINIMAL];

/// The recipe for a template name, if the builder knows it.
pub fn find(name: &str) -> Option<&'static TemplateRecipe> {
    RECIPES.iter().find(|recipe| recipe.name == name)
}

/// Names of all templates the builder can make, for error messages.
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|recipe| recipe.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_is_known_and_names_are_valid() {
        assert_eq!(find("minimal"), Some(&MINIMAL));
        assert_eq!(find("nope"), None);
        for name in names() {
            crate::images::validate_template_name(name).unwrap();
        }
    }
}
