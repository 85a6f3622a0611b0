//! `wrenn image …`: builds guest images on this machine, showing a spinner per step.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wrenn_agent::image_build::{
    self, format_duration, BuildOptions, BuildProgress, BuildReport, Outcome, Rebuild, StepReport,
};
use wrenn_agent::images::DEFAULT_TEMPLATE;

use crate::terminal;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the guest kernel and a template root filesystem, reusing what is up to date.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Where kernels and templates are installed.
    #[arg(long, env = "WRENN_IMAGES_DIR", default_value = image_build::DEFAULT_IMAGES_DIR)]
    images_dir: PathBuf,
    /// Where the kernel source tree and debootstrap trees are kept between builds.
    #[arg(long, env = "WRENN_CACHE_DIR", default_value = image_build::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Static envd binary to install as the guest's init [default: `envd` next to this executable].
    #[arg(long, env = "WRENN_ENVD")]
    envd: Option<PathBuf>,
    /// Template to build.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    template: String,
    /// Rebuild the kernel and template even if their inputs are unchanged (caches are kept).
    #[arg(long)]
    force: bool,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Build(build) => run_build(build),
    }
}

fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let envd = match args.envd {
        Some(path) => path,
        None => std::env::current_exe()
            .context("find the running wrenn executable to locate envd next to it")?
            .with_file_name("envd"),
    };
    let options = BuildOptions {
        images_dir: args.images_dir,
        cache_dir: args.cache_dir,
        envd,
        template: args.template,
        rebuild: if args.force {
            Rebuild::Always
        } else {
            Rebuild::IfInputsChanged
        },
    };
    let report =
        image_build::build(&options, &mut SpinnerProgress::default()).context("build images")?;
    println!("{}", summary(&report));
    Ok(())
}

/// One line: what was built or reused, where, and how long each part took.
fn summary(report: &BuildReport) -> String {
    let part = |step: &StepReport| match step.outcome {
        Outcome::Built => format!("{} built in {}", step.step, format_duration(step.elapsed)),
        Outcome::Reused => format!("{} reused", step.step),
    };
    let mut parts = vec![part(&report.kernel)];
    parts.extend(report.debootstrap.as_ref().map(part));
    parts.push(part(&report.template));
    format!(
        "template {} ready in {}: {} ({} MiB, kernel {}); {}",
        report.manifest.name,
        format_duration(report.elapsed),
        report.template.path.display(),
        report.manifest.rootfs_bytes >> 20,
        report.kernel.path.display(),
        parts.join(", ")
    )
}

/// Shows the current step as a spinner with its elapsed time and the tool's last output line.
#[derive(Default)]
struct SpinnerProgress {
    bar: Option<ProgressBar>,
}

/// Longest tool output line shown next to the spinner.
const MAX_LINE: usize = 160;

impl BuildProgress for SpinnerProgress {
    fn step(&mut self, name: &str) {
        self.clear();
        let bar = ProgressBar::new_spinner().with_prefix(name.to_owned());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:.bold} [{elapsed}] {wide_msg:.dim}",
            )
            .expect("static template is valid"),
        );
        if bar.is_hidden() {
            // Not a terminal: no spinner, but still say what is happening.
            eprintln!("==> {name}");
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        terminal::set_active_bar(Some(bar.clone()));
        self.bar = Some(bar);
    }

    fn line(&mut self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.chars().take(MAX_LINE).collect::<String>());
        }
    }

    fn done(&mut self, summary: &str) {
        self.clear();
        eprintln!("✓ {summary}");
    }
}

impl SpinnerProgress {
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            terminal::set_active_bar(None);
            bar.finish_and_clear();
        }
    }
}

impl Drop for SpinnerProgress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: ImageCommand,
    }

    #[test]
    fn build_defaults() {
        let cli = TestCli::try_parse_from(["image", "build"]).unwrap();
        let ImageCommand::Build(args) = cli.command;
        // Environment variables could override the defaults; only check when they are unset.
        if std::env::var_os("WRENN_IMAGES_DIR").is_none() {
            assert_eq!(args.images_dir, PathBuf::from("/var/lib/wrenn/images"));
        }
        assert_eq!(args.template, "minimal");
        assert!(!args.force);
        let cli =
            TestCli::try_parse_from(["image", "build", "--envd", "/x/envd", "--force"]).unwrap();
        let ImageCommand::Build(args) = cli.command;
        assert_eq!(args.envd, Some(PathBuf::from("/x/envd")));
        assert!(args.force);
    }
}
