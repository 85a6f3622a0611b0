//! How commands talking to the control plane print: the server's JSON with `--json`, aligned
//! tables for people, and spinners and progress bars on stderr when it is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Human tables or machine JSON, chosen by the global `--json` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

impl Format {
    pub fn from_flag(json: bool) -> Self {
        if json {
            Format::Json
        } else {
            Format::Human
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: print JSON: {error}"),
    }
}

/// A table with a header row, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// "12s ago", "5m ago", "3h ago", "2d ago".
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// Megabytes for people: "512 MiB", "2 GiB".
pub fn mebibytes(mb: u32) -> String {
    if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{} GiB", mb / 1024)
    } else {
        format!("{mb} MiB")
    }
}

/// `k=v,k2=v2`, or `-` when empty.
pub fn pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let text = pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

fn stderr_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A spinner on stderr for a slow step; invisible when stderr is not a terminal.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, stderr_target());
    spinner.set_message(message.into());
    spinner.enable_steady_tick(Duration::from_millis(100));
    crate::terminal::set_active_bar(Some(spinner.clone()));
    spinner
}

/// A byte progress bar on stderr for a transfer of `len` bytes (unknown: a byte counter).
pub fn transfer_bar(len: Option<u64>, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, stderr_target());
    let template = match len {
        Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        None => "{msg} {spinner} {bytes} {bytes_per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.into());
    crate::terminal::set_active_bar(Some(bar.clone()));
    bar
}

/// Removes a spinner or bar and stops log lines from working around it.
pub fn finish(bar: &ProgressBar) {
    bar.finish_and_clear();
    crate::terminal::set_active_bar(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let mut table = Table::new(&["ID", "STATE", "TEMPLATE"]);
        table.row(vec!["sb-1".into(), "running".into(), "minimal".into()]);
        table.row(vec!["sb-22222".into(), "paused".into(), "x".into()]);
        assert_eq!(
            table.render(),
            "ID        STATE    TEMPLATE\n\
             sb-1      running  minimal\n\
             sb-22222  paused   x\n"
        );
    }

    #[test]
    fn ages_and_sizes_read_well() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s ago");
        assert_eq!(age(now - chrono::Duration::minutes(3), now), "3m ago");
        assert_eq!(age(now - chrono::Duration::hours(26), now), "1d ago");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s ago");
        assert_eq!(mebibytes(512), "512 MiB");
        assert_eq!(mebibytes(2048), "2 GiB");
    }
}
