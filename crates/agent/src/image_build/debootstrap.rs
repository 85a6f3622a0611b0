//! `debootstrap`: the pristine Debian tree a template's root filesystem is made from, cached.
//!
//! ```text
//! <cache>/rootfs/<key>/            the tree, never modified after debootstrap finishes
//! <cache>/rootfs/<key>.complete    written last; a tree without it is half-built and redone
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmd::{self, CommandError};
use super::inputs_key::KeyHasher;
use super::progress::BuildProgress;
use super::recipe::TemplateRecipe;
use super::scratch::{self, ScratchError};
use super::Outcome;

/// Bumped when the way the tree is bootstrapped changes (not the later customization).
const TREE_BUILDER_VERSION: &str = "1";

/// Errors producing the cached tree.
#[derive(Debug, thiserror::Error)]
pub enum DebootstrapError {
    #[error("clear the half-built tree {path}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: ScratchError,
    },
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap Debian into {path}")]
    Run {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("mark {path} complete")]
    Mark {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A finished debootstrap tree in the cache.
#[derive(Debug, Clone)]
pub struct CachedTree {
    pub path: PathBuf,
    pub outcome: Outcome,
}

/// Cache key of the tree: recipe contents plus the builder version.
pub fn tree_key(recipe: &TemplateRecipe) -> String {
    KeyHasher::new("wrenn-rootfs-tree")
        .field("builder", TREE_BUILDER_VERSION.as_bytes())
        .field("suite", recipe.suite.as_bytes())
        .field("mirror", recipe.mirror.as_bytes())
        .field("variant", recipe.variant.as_bytes())
        .field("packages", recipe.packages.join(",").as_bytes())
        .finish()
}

/// `debootstrap --variant=… --include=… <suite> <target> <mirror>`.
pub fn command(recipe: &TemplateRecipe, target: &Path) -> Command {
    let mut cmd = Command::new("debootstrap");
    cmd.arg(format!("--variant={}", recipe.variant))
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg(recipe.suite)
        .arg(target)
        .arg(recipe.mirror);
    cmd
}

/// Returns the cached tree for `recipe`, running debootstrap first if there is no complete one.
pub fn ensure_tree(
    cache_dir: &Path,
    recipe: &TemplateRecipe,
    progress: &mut dyn BuildProgress,
) -> Result<CachedTree, DebootstrapError> {
    let key = tree_key(recipe);
    let trees = cache_dir.join("rootfs");
    let path = trees.join(&key);
    let marker = trees.join(format!("{key}.complete"));
    if marker.exists() && path.is_dir() {
        progress.line(&format!("reusing debootstrap tree {}", path.display()));
        return Ok(CachedTree {
            path,
            outcome: Outcome::Reused,
        });
    }

    // Whatever is there is an interrupted run: debootstrap cannot resume, so start over.
    scratch::remove_tree(&path).map_err(|source| DebootstrapError::Scratch {
        path: path.clone(),
        source,
    })?;
    std::fs::create_dir_all(&path).map_err(|source| DebootstrapError::CreateDir {
        path: path.clone(),
        source,
    })?;
    cmd::run(&mut command(recipe, &path), progress).map_err(|source| DebootstrapError::Run {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&marker, format!("{}\n", recipe.packages.join(","))).map_err(|source| {
        DebootstrapError::Mark {
            path: marker.clone(),
            source,
        }
    })?;
    Ok(CachedTree {
        path,
        outcome: Outcome::Built,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::cmd::display;
    use crate::image_build::recipe::MINIMAL;

    #[test]
    fn key_changes_when_the_recipe_changes() {
        let base = tree_key(&MINIMAL);
        let variants = [
            TemplateRecipe {
                suite: "trixie",
                ..MINIMAL
            },
            TemplateRecipe {
                mirror: "http://mirror.example/debian",
                ..MINIMAL
            },
            TemplateRecipe {
                variant: "buildd",
                ..MINIMAL
            },
            TemplateRecipe {
                packages: &["python3"],
                ..MINIMAL
            },
        ];
        for recipe in &variants {
            assert_ne!(tree_key(recipe), base, "{recipe:?}");
        }
        assert_eq!(tree_key(&MINIMAL), base);
    }

    #[test]
    fn command_matches_the_recipe() {
        assert_eq!(
            display(&command(&MINIMAL, Path::new("/c/rootfs/k"))),
            "debootstrap --variant=minbase \
             --include=python3,bash,coreutils,procps,curl,ca-certificates,git,iproute2 \
             bookworm /c/rootfs/k http://deb.debian.org/debian"
        );
    }
}
