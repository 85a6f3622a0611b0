//! `wrenn template …`: the templates sandboxes start from — the platform's and the team's
//! snapshots.

use clap::{Args, Subcommand};
use wrenn_api::Template;

use super::ApiArgs;
use crate::output::{self, print_json, Format, Table};

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// List the platform's templates and the team's own.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete one of the team's templates.
    #[command(visible_alias = "delete")]
    Rm { name: String },
}

pub async fn run(args: TemplateArgs, api: &ApiArgs) -> anyhow::Result<i32> {
    let client = api.client()?;
    match args.command {
        TemplateCommand::Ls => {
            let list = client.template_list().await?;
            match api.format() {
                Format::Json => print_json(&list),
                Format::Human if list.templates.is_empty() => eprintln!("no templates"),
                Format::Human => template_table(&list.templates).print(),
            }
        }
        TemplateCommand::Rm { name } => {
            client.template_delete(&name).await?;
            match api.format() {
                Format::Json => print_json(&serde_json::json!({ "name": name, "deleted": true })),
                Format::Human => println!("deleted template {name}"),
            }
        }
    }
    Ok(0)
}

fn template_table(templates: &[Template]) -> Table {
    let now = chrono::Utc::now();
    let mut table = Table::new(&["NAME", "KIND", "OWNER", "SIZE", "SOURCE", "CREATED"]);
    for template in templates {
        let size = if template.snapshot {
            format!(
                "{} vCPU, {}",
                template.vcpus,
                output::mebibytes(template.memory_mb)
            )
        } else {
            "-".into()
        };
        table.row(vec![
            template.name.clone(),
            if template.snapshot {
                "snapshot"
            } else {
                "image"
            }
            .into(),
            if template.team_id.is_some() {
                "team"
            } else {
                "platform"
            }
            .into(),
            size,
            template
                .source_sandbox_id
                .clone()
                .unwrap_or_else(|| "-".into()),
            output::age(template.created_at, now),
        ]);
    }
    table
}
