//! `ff`: operate ff flags from a terminal, over the admin API.
//!
//! `--url`/`FF_URL` is where the admin is mounted (default
//! `http://127.0.0.1:3000/admin`), `--token`/`FF_TOKEN` the API token. Human
//! tables by default, `--json` for scripts; any failure exits non-zero with a
//! one-line reason.

mod coverage;
mod import;
mod scan;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ff_api::{BatchOp, BatchRequest, NoFields, Reasoned};
use ff_store::FlagPatch;
use ff_store::Role;
use reqwest::{Method, Url};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "ff", version, about = "Operate ff feature flags: read, flip, override, audit, revert")]
struct Cli {
    /// Where the admin API is mounted.
    #[arg(long, env = "FF_URL", global = true, default_value = "http://127.0.0.1:3000/admin")]
    url: String,
    /// API token (`Authorization: Bearer`).
    #[arg(long, env = "FF_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List flags.
    Flags {
        /// Text in the key or description.
        #[arg(long)]
        q: Option<String>,
        /// Only flags with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only flags of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only flags past their expiry.
        #[arg(long)]
        stale: bool,
    },
    /// Show one flag with its overrides.
    Get { key: String },
    /// Set a flag's global value (JSON, or a plain word for strings).
    Set {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[arg(long)]
        reason: Option<String>,
        /// Schedule it: RFC 3339 (`2026-12-24T08:00:00Z`) or from now (`+30m`, `+2h`, `+1d`).
        #[arg(long, value_parser = parse_at)]
        at: Option<time::OffsetDateTime>,
    },
    /// Switch a flag on.
    On {
        key: String,
        #[arg(long)]
        reason: Option<String>,
        /// Schedule it (as for `set`).
        #[arg(long, value_parser = parse_at)]
        at: Option<time::OffsetDateTime>,
    },
    /// Switch a flag off: its off value for everyone, overrides included.
    Off {
        key: String,
        #[arg(long)]
        reason: Option<String>,
        /// Schedule it (as for `set`).
        #[arg(long, value_parser = parse_at)]
        at: Option<time::OffsetDateTime>,
    },
    /// Change requests: changes waiting for a second editor's approval or for their time.
    Requests {
        /// Also applied, rejected and failed ones.
        #[arg(long)]
        all: bool,
    },
    /// One change request, whole.
    Request { id: u64 },
    /// Approve another editor's change request: applied now, or at its time.
    Approve { id: u64 },
    /// Reject a change request (its author withdraws it the same way).
    Reject {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Base your change request on the flags as they are now (a flag it changes moved
    /// since): its approvals are dropped.
    Rebase { id: u64 },
    /// Per-user values.
    #[command(subcommand)]
    Override(OverrideCommand),
    /// What one user sees, and why.
    User { user: String },
    /// Flag keys in source files against the store: declared but missing from the
    /// store, in the store but nowhere in code (safe to archive), and stale or expired
    /// but still in code (with file:line). Exits 1 when there is anything to do.
    Scan {
        /// Files or directories (build output, dependencies and VCS data are skipped).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        /// `text` (default) or `json` (same as `--json`).
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Which flags a test run read, and which only ever in one state: from the files
    /// test processes write when run with `FF_FLAG_COVERAGE=DIR` (ff-core's `coverage`
    /// feature). Needs no server. Exits 1 with `--fail` when a flag was read in one
    /// state only, or a flag declared in the scanned code never.
    Coverage {
        /// The directory given as `FF_FLAG_COVERAGE`.
        dir: std::path::PathBuf,
        /// Source files or directories whose declared flags should all be read in
        /// every state: only these flags are then judged.
        #[arg(long)]
        scan: Vec<std::path::PathBuf>,
        /// Exit 1 if any flag was read in one state only, or declared and never read.
        #[arg(long)]
        fail: bool,
    },
    /// Flags to clean up: past expiry, not evaluated, or serving one value for days.
    /// Exits 1 when any is stale, so CI can fail on it.
    Stale {
        /// Days without an evaluation that make a flag stale (server default: 7).
        #[arg(long)]
        not_evaluated_days: Option<u32>,
        /// Days of serving one value that make a flag stale (server default: 7).
        #[arg(long)]
        one_value_days: Option<u32>,
    },
    /// A guarded rollout: the test's state, each variation's requests, errors and
    /// latency, recent windows, and what the guard wrote. `--set JSON` sets the flag's
    /// guard (e.g. '{"max_error_increase": 1, "max_latency_increase": 20}'), keeping the
    /// rest of its targeting; `--remove` removes it.
    Guard {
        key: String,
        #[arg(long, conflicts_with = "remove")]
        set: Option<String>,
        #[arg(long)]
        remove: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check a targeting edit without saving it: the store's own validation, what it
    /// would change, and what each `--user "ID attr=value ..."` gets now and with it.
    /// FILE holds the targeting as YAML or JSON. Exits 1 when the store would refuse it.
    Preview {
        key: String,
        file: std::path::PathBuf,
        /// A user to try: `ID attribute=value ...` (repeatable; without an ID: anonymous).
        #[arg(long = "user")]
        users: Vec<String>,
    },
    /// The audit log, newest first.
    History {
        key: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Undo one change (itself recorded).
    Revert {
        seq: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write every flag and override as YAML (what `ff import` reads).
    Export,
    /// Make the flags match a YAML file: prints the diff, then applies it as one
    /// audited batch, all or nothing (over 1,000 changes: several batches). A flag
    /// changed since the diff was made fails the batch. Flags missing from the file
    /// are left alone.
    Import {
        file: std::path::PathBuf,
        /// Only print the diff.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "ff import")]
        reason: String,
    },
    /// List segments.
    Segments,
    /// Segments: named sets of users that rules refer to with `in_segment`.
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Webhook endpoints and their deliveries (admins).
    Webhooks,
    /// Add or remove a webhook endpoint (admins).
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Post every change (or the kinds named) to URL, signed; prints the secret once.
    Add {
        /// Where to post (http or https).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// A kind of event to send: flag, override, segment, request, guard or token
        /// (repeatable; none: all).
        #[arg(long = "event")]
        events: Vec<String>,
        /// Send Slack's `{"text": ...}` instead of JSON events.
        #[arg(long)]
        slack: bool,
        /// The signing secret (16 to 256 characters); none: one is made.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Remove a webhook: nothing more is sent to it.
    Rm { id: u64 },
}

#[derive(Debug, Subcommand)]
enum SegmentCommand {
    /// Show one segment.
    Get { key: String },
    /// Create or replace a segment from a YAML or JSON file
    /// (`description`, `included`, `excluded`, `rules`).
    Put {
        key: String,
        file: std::path::PathBuf,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a segment no flag uses.
    Rm {
        key: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Batches of changes within the server's limits (1,000 changes, 256 KiB bodies).
fn chunks(changes: Vec<BatchOp>) -> Vec<Vec<BatchOp>> {
    const MAX_CHANGES: usize = 1000;
    const MAX_BYTES: usize = 200 * 1024;
    let mut out: Vec<Vec<BatchOp>> = vec![Vec::new()];
    let mut bytes = 0;
    for c in changes {
        let size = serde_json::to_string(&c).map_or(0, |t| t.len());
        let last = out.last_mut().expect("starts with one batch");
        if !last.is_empty() && (last.len() == MAX_CHANGES || bytes + size > MAX_BYTES) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("not empty").push(c);
    }
    out
}

#[derive(Debug, Subcommand)]
enum OverrideCommand {
    /// Set a user's value.
    Set {
        key: String,
        user: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a user's value.
    Rm {
        key: String,
        user: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; prints it once.
    Create {
        /// Unique name, recorded as the actor of its changes.
        #[arg(long)]
        name: String,
        /// viewer, editor or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Create it directly in this database (for the first admin token)
        /// instead of through the API.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List tokens.
    List,
    /// Revoke a token by name.
    Revoke {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: viewer, editor or admin"))
}

/// A value as typed: JSON if it parses (`true`, `12`, `"x"`, `{...}`), else a string.
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Api {
    fn new(url: &str, token: Option<String>) -> anyhow::Result<Api> {
        let base = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
        if base.cannot_be_a_base() {
            bail!("--url {url:?} cannot have paths below it");
        }
        Ok(Api { http: reqwest::Client::new(), base, token })
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn call<B: serde::Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        if_match: Option<&str>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let token = self.token.as_deref().context("no token: pass --token or set FF_TOKEN")?;
        let url = self.url(segments, query);
        let mut req = self.http.request(method, url.clone()).bearer_auth(token);
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = res.status();
        let etag = res.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::ACCEPTED
            && let Ok(made) = serde_json::from_value::<ff_api::RequestMade>(body.clone())
        {
            return Err(Held { made, body }.into());
        }
        if !status.is_success() {
            let e = serde_json::from_value::<ff_api::ApiError>(body)
                .unwrap_or(ff_api::ApiError { error: "error".into(), message: "no details".into() });
            bail!("{} {}: {}", status.as_u16(), e.error, e.message);
        }
        Ok((body, etag))
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, segments, query, None::<&NoFields>, None).await?.0)
    }

    /// PATCH with the flag's current version, so a concurrent change is never lost.
    async fn patch_flag(&self, key: &str, patch: FlagPatch, reason: Option<String>) -> anyhow::Result<Value> {
        let (_, etag) = self.call(Method::GET, &["flags", key], &[], None::<&NoFields>, None).await?;
        let body = Reasoned::new(patch, reason);
        Ok(self.call(Method::PATCH, &["flags", key], &[], Some(&body), etag.as_deref()).await?.0)
    }
}

/// Prints rows as aligned columns without borders: easy to read and to `grep`.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut t = comfy_table::Table::new();
    let rows = rows.into_iter().map(|r| r.iter().map(|c| clean(c)).collect::<Vec<_>>());
    t.load_style(comfy_table::presets::NOTHING).set_header(headers.to_vec()).add_rows(rows);
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    say!("{}", t.trim_fmt());
}

/// A value for a person to read, safe for a terminal.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// Prints a line with [`clean_lines`]: what the server sent cannot drive the terminal.
macro_rules! say {
    ($($arg:tt)*) => { out(&format!("{}\n", clean_lines(&format!($($arg)*)))) };
}

/// Writes to stdout; a reader that went away (`ff ... | head -1`) ends `ff` quietly.
fn out(text: &str) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ff: cannot write the output: {e}");
        std::process::exit(1);
    }
}
use say;

/// Text from the server, safe to print in one line: control characters (newlines and
/// escape sequences included) and the invisible ones that reorder or hide text
/// (bidirectional overrides, zero-width marks) are shown escaped (`\n`, `\u{1b}`).
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clean`] for text of several lines: the line breaks stay.
fn clean_lines(s: &str) -> String {
    s.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// A document `ff` prints to be read back (`ff export`, `ff segment get`): escaped for a
/// terminal, byte for byte into a file or a pipe, so the round trip keeps every character.
fn document(text: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() { clean_lines(text) } else { text.to_owned() }
}

/// Any typed field as the API writes it (`-` for none).
fn show<T: serde::Serialize>(v: &T) -> String {
    text(&serde_json::to_value(v).unwrap_or_default())
}

fn switch_state(enabled: bool) -> &'static str {
    if enabled { "on" } else { "OFF" }
}

/// A short form of a change row's before or after state.
fn summary(state: Result<Option<ff_core::ChangeState>, serde_json::Error>) -> String {
    use ff_core::ChangeState;
    match state {
        Ok(None) => "-".into(),
        Ok(Some(ChangeState::Flag(r))) => {
            format!("{}{}", text(&r.value.to_json()), if r.enabled { "" } else { " (off)" })
        }
        Ok(Some(ChangeState::Override(v))) => text(&v),
        Ok(Some(ChangeState::Segment(s))) => format!(
            "{} in, {} out, {} rule(s)",
            s.definition.included.len(),
            s.definition.excluded.len(),
            s.definition.rules.len()
        ),
        Ok(Some(ChangeState::Token(t))) => format!("{} ({})", t.name, t.role),
        Ok(Some(ChangeState::Webhook(w))) => {
            w.get("url").and_then(Value::as_str).map_or_else(|| "webhook".into(), |u| format!("webhook {u}"))
        }
        Ok(Some(ChangeState::Request(r))) => r
            .get("status")
            .and_then(Value::as_str)
            .map_or_else(|| "request".into(), |s| format!("request {s}")),
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// Prints a response as the API sent it (`--json`).
fn print(v: &Value) -> anyhow::Result<()> {
    out(&format!("{}\n", json_out(v)?));
    Ok(())
}

/// Pretty JSON. serde_json leaves DEL, C1 controls and invisible marks raw: as `\uXXXX`
/// they mean the same to a JSON reader and nothing to a terminal.
fn json_out(v: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    for c in serde_json::to_string_pretty(v)?.chars() {
        if c != '\n' && (c.is_control() || is_invisible(c)) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.url, cli.token.clone())?;
    let json_out = cli.json;
    match cli.command {
        Command::Flags { q, tag, owner, stale } => cmd_flags(&api, json_out, q, tag, owner, stale).await?,
        Command::Get { key } => cmd_get(&api, json_out, key).await?,
        Command::Set { key, value, reason, at: Some(at) } => {
            let patch = FlagPatch { value: Some(parse_value(&value)), ..FlagPatch::default() };
            schedule(&api, json_out, key, patch, reason, at).await?
        }
        Command::On { key, reason, at: Some(at) } => {
            let patch = FlagPatch { enabled: Some(true), ..FlagPatch::default() };
            schedule(&api, json_out, key, patch, reason, at).await?
        }
        Command::Off { key, reason, at: Some(at) } => {
            let patch = FlagPatch { enabled: Some(false), ..FlagPatch::default() };
            schedule(&api, json_out, key, patch, reason, at).await?
        }
        Command::Set { key, value, reason, at: None } => cmd_set(&api, json_out, key, value, reason).await?,
        Command::On { key, reason, at: None } => switch(&api, &key, true, reason, json_out).await?,
        Command::Off { key, reason, at: None } => switch(&api, &key, false, reason, json_out).await?,
        Command::Requests { all } => cmd_requests(&api, json_out, all).await?,
        Command::Request { id } => cmd_request(&api, json_out, id).await?,
        Command::Approve { id } => decide(&api, json_out, id, "approve", None).await?,
        Command::Reject { id, reason } => decide(&api, json_out, id, "reject", reason).await?,
        Command::Rebase { id } => decide(&api, json_out, id, "rebase", None).await?,
        Command::Override(OverrideCommand::Set { key, user, value, reason }) => {
            cmd_override_set(&api, json_out, key, user, value, reason).await?
        }
        Command::Override(OverrideCommand::Rm { key, user, reason }) => {
            cmd_override_rm(&api, json_out, key, user, reason).await?
        }
        Command::User { user } => cmd_user(&api, json_out, user).await?,
        Command::Scan { paths, format } => cmd_scan(&api, json_out, paths, format).await?,
        Command::Coverage { dir, scan, fail } => cmd_coverage(json_out, &dir, &scan, fail)?,
        Command::Stale { not_evaluated_days, one_value_days } => {
            cmd_stale(&api, json_out, not_evaluated_days, one_value_days).await?
        }
        Command::Preview { key, file, users } => cmd_preview(&api, json_out, key, file, users).await?,
        Command::Guard { key, set, remove, reason } => {
            cmd_guard(&api, json_out, key, set, remove, reason).await?
        }
        Command::History { key, actor, limit } => cmd_history(&api, json_out, key, actor, limit).await?,
        Command::Revert { seq, reason } => cmd_revert(&api, json_out, seq, reason).await?,
        Command::Export => cmd_export(&api, json_out).await?,
        Command::Import { file, dry_run, reason } => cmd_import(&api, file, dry_run, reason).await?,
        Command::Segments => cmd_segments(&api, json_out).await?,
        Command::Segment(SegmentCommand::Get { key }) => cmd_segment_get(&api, json_out, key).await?,
        Command::Segment(SegmentCommand::Put { key, file, reason }) => {
            cmd_segment_put(&api, json_out, key, file, reason).await?
        }
        Command::Segment(SegmentCommand::Rm { key, reason }) => {
            cmd_segment_rm(&api, json_out, key, reason).await?
        }
        Command::Token(TokenCommand::Create { name, role, database_url: Some(url), reason }) => {
            cmd_token_create_direct(json_out, name, role, url, reason).await?
        }
        Command::Token(TokenCommand::Create { name, role, database_url: None, reason }) => {
            cmd_token_create_via_api(&api, json_out, name, role, reason).await?
        }
        Command::Token(TokenCommand::List) => cmd_token_list(&api, json_out).await?,
        Command::Webhooks => cmd_webhooks(&api, json_out).await?,
        Command::Webhook(WebhookCommand::Add { endpoint, events, slack, secret }) => {
            let format = if slack { ff_api::WebhookFormat::Slack } else { ff_api::WebhookFormat::Json };
            let new = ff_api::NewWebhook { url: endpoint, events, format, secret };
            let (body, _) = api.call(Method::POST, &["webhooks"], &[], Some(&new), None).await?;
            if json_out {
                print(&body)?;
            } else {
                let made: ff_api::WebhookCreated = serde_json::from_value(body)?;
                say!("webhook {} added; its signing secret (shown once):", made.webhook.id);
                say!("{}", made.secret);
            }
        }
        Command::Webhook(WebhookCommand::Rm { id }) => {
            api.call(Method::DELETE, &["webhooks", &id.to_string()], &[], None::<&NoFields>, None).await?;
            if !json_out {
                say!("webhook {id} removed");
            }
        }
        Command::Token(TokenCommand::Revoke { name, reason }) => {
            cmd_token_revoke(&api, json_out, name, reason).await?
        }
    }
    Ok(())
}

async fn cmd_flags(
    api: &Api,
    json_out: bool,
    q: Option<String>,
    tag: Option<String>,
    owner: Option<String>,
    stale: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    query.extend(q.map(|v| ("q", v)));
    query.extend(tag.map(|v| ("tag", v)));
    query.extend(owner.map(|v| ("owner", v)));
    if stale {
        query.push(("stale", "true".into()));
    }
    let body = api.get(&["flags"], &query).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::FlagList = serde_json::from_value(body)?;
    let rows = list
        .flags
        .iter()
        .map(|f| {
            let r = &f.record;
            vec![
                r.key.clone(),
                r.value_type.to_string(),
                text(&r.value.to_json()),
                switch_state(r.enabled).into(),
                f.overrides.to_string(),
                r.version.to_string(),
                r.meta.owner.clone(),
            ]
        })
        .collect();
    table(&["KEY", "TYPE", "VALUE", "SWITCH", "OVERRIDES", "VERSION", "OWNER"], rows);
    Ok(())
}

async fn cmd_get(api: &Api, json_out: bool, key: String) -> anyhow::Result<()> {
    let body = api.get(&["flags", &key], &[]).await?;
    if json_out {
        return print(&body);
    }
    let detail: ff_api::FlagDetail = serde_json::from_value(body)?;
    let (f, schema) = (&detail.flag.record, &detail.flag.record.schema);
    // A duration's bounds are stored in seconds and shown as durations.
    let (min, max) = schema.duration_bounds();
    let bound = |d: Option<std::time::Duration>, n: &Option<serde_json::Number>| {
        d.map_or_else(|| show(n), ff_core::format_duration)
    };
    let bounds = [
        ("min", bound(min, &schema.min)),
        ("max", bound(max, &schema.max)),
        ("allowed", show(&schema.allowed)),
    ]
    .into_iter()
    .filter(|(_, v)| v != "-" && v != "[]")
    .map(|(k, v)| format!("{k} {v}"))
    .collect::<Vec<_>>()
    .join(", ");
    let fields = [
        ("key", f.key.clone()),
        (
            "type",
            match schema.format {
                Some(ff_core::ValueFormat::Duration) => "string (a duration: 90m, 48h, 1h30m)".into(),
                None => f.value_type.to_string(),
            },
        ),
        ("value", text(&f.value.to_json())),
        ("switch", switch_state(f.enabled).into()),
        ("off value", text(&f.off_value.to_json())),
        ("bounds", if bounds.is_empty() { "-".into() } else { bounds }),
        ("description", f.description.clone()),
        ("owner", f.meta.owner.clone()),
        ("tags", show(&f.meta.tags)),
        ("ticket", f.meta.ticket.clone()),
        ("kind", show(&f.meta.kind)),
        ("permanent", show(&f.meta.permanent)),
        ("expires", time_or_dash(f.meta.expires_at)),
        ("on expiry", show(&f.meta.expiry)),
        ("version", f.version.to_string()),
        ("archived", f.archived.to_string()),
    ];
    for (k, v) in fields {
        say!("{k:<12} {}", clean(&v));
    }
    let overrides: Vec<Vec<String>> =
        detail.overrides.iter().map(|o| vec![o.user_id.clone(), text(&o.value)]).collect();
    say!("overrides    {}", detail.overrides_total);
    if !overrides.is_empty() {
        table(&["USER", "VALUE"], overrides);
    }
    Ok(())
}

async fn cmd_set(
    api: &Api,
    json_out: bool,
    key: String,
    value: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = api
        .patch_flag(&key, FlagPatch { value: Some(parse_value(&value)), ..FlagPatch::default() }, reason)
        .await?;
    if json_out {
        return print(&body);
    }
    let written: ff_api::FlagWritten = serde_json::from_value(body)?;
    say!("{key} = {} (version {})", text(&written.flag.value.to_json()), written.flag.version);
    Ok(())
}

async fn cmd_override_set(
    api: &Api,
    json_out: bool,
    key: String,
    user: String,
    value: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = Reasoned::new(ff_api::OverrideSet { value: parse_value(&value) }, reason);
    let (body, _) =
        api.call(Method::PUT, &["flags", &key, "overrides", &user], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    let written: ff_api::OverrideWritten = serde_json::from_value(body)?;
    say!("{key} for {user} = {}", text(&written.value));
    Ok(())
}

async fn cmd_override_rm(
    api: &Api,
    json_out: bool,
    key: String,
    user: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = Reasoned::new(NoFields {}, reason);
    let (body, _) =
        api.call(Method::DELETE, &["flags", &key, "overrides", &user], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    say!("{key} for {user}: override removed");
    Ok(())
}

async fn cmd_user(api: &Api, json_out: bool, user: String) -> anyhow::Result<()> {
    let body = api.get(&["users", &user], &[]).await?;
    if json_out {
        return print(&body);
    }
    let lookup: ff_api::UserLookup = serde_json::from_value(body)?;
    let rows =
        lookup.flags.iter().map(|f| vec![f.key.clone(), text(&f.value), f.reason.to_string()]).collect();
    table(&["KEY", "VALUE", "REASON"], rows);
    Ok(())
}

async fn cmd_scan(
    api: &Api,
    json_out: bool,
    paths: Vec<std::path::PathBuf>,
    format: String,
) -> anyhow::Result<()> {
    let as_json = match format.as_str() {
        "json" => true,
        "text" => json_out,
        other => bail!("--format must be text or json, not {other:?}"),
    };
    let found = scan::scan(&paths)?;
    let flags: ff_api::FlagList = serde_json::from_value(api.get(&["flags"], &[]).await?)?;
    let keys = flags.flags.into_iter().map(|f| f.record.key).collect();
    let report: ff_api::StaleReport = serde_json::from_value(api.get(&["stale"], &[]).await?)?;
    let stale = report
        .stale
        .into_iter()
        .map(|s| (s.key, s.reasons.iter().map(|r| r.as_str().to_owned()).collect()))
        .collect();
    let report = scan::report(&found, &keys, &stale);
    if as_json {
        print(&serde_json::to_value(&report)?)?;
    } else {
        let places = |p: &[scan::Place]| p.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        say!("scanned {} files", report.files);
        if !report.missing_from_store.is_empty() {
            say!("\ndeclared in code, missing from the store:");
            for e in &report.missing_from_store {
                say!("  {}  {}", e.key, places(&e.places));
            }
        }
        if !report.unreferenced.is_empty() {
            say!("\nin the store, nowhere in code (safe to archive):");
            for k in &report.unreferenced {
                say!("  {k}");
            }
        }
        if !report.stale_in_code.is_empty() {
            say!("\nstale or expired, still in code (remove these uses first):");
            for e in &report.stale_in_code {
                say!("  {} ({})  {}", e.key, e.reasons.join(", "), places(&e.places));
            }
        }
    }
    if !report.is_clean() {
        let n = report.missing_from_store.len() + report.unreferenced.len() + report.stale_in_code.len();
        bail!("scan found {n} key{} to act on", if n == 1 { "" } else { "s" });
    }
    Ok(())
}

fn cmd_coverage(
    json_out: bool,
    dir: &std::path::Path,
    paths: &[std::path::PathBuf],
    fail: bool,
) -> anyhow::Result<()> {
    let declared =
        if paths.is_empty() { Default::default() } else { scan::scan(paths)?.declared.into_keys().collect() };
    let c = coverage::read(dir, &declared)?;
    let one: Vec<(&String, &coverage::Read)> = c.one_state().collect();
    if json_out {
        print(&serde_json::to_value(&c)?)?;
    } else {
        say!("{} flags read by the tests ({} files)", c.read.len(), c.files);
        if !one.is_empty() {
            say!("\nread in one state only (test the other):");
            for (k, r) in &one {
                say!("  {k}  only {}", r.values.iter().next().map_or("", String::as_str));
            }
        }
        if !c.never_read.is_empty() {
            say!("\ndeclared in code, never read by the tests:");
            for k in &c.never_read {
                say!("  {k}");
            }
        }
    }
    if fail && (!one.is_empty() || !c.never_read.is_empty()) {
        let n = one.len() + c.never_read.len();
        bail!("{n} flag{} not covered in every state", if n == 1 { "" } else { "s" });
    }
    Ok(())
}

async fn cmd_stale(
    api: &Api,
    json_out: bool,
    not_evaluated_days: Option<u32>,
    one_value_days: Option<u32>,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    query.extend(not_evaluated_days.map(|d| ("not_evaluated_days", d.to_string())));
    query.extend(one_value_days.map(|d| ("one_value_days", d.to_string())));
    let body = api.get(&["stale"], &query).await?;
    if json_out {
        print(&body)?;
    }
    let report: ff_api::StaleReport = serde_json::from_value(body)?;
    if !json_out {
        print_stale(&report);
    }
    let stale = report.stale.len();
    if stale > 0 {
        anyhow::bail!("{stale} stale flag{}", if stale == 1 { "" } else { "s" });
    }
    Ok(())
}

fn print_stale(report: &ff_api::StaleReport) {
    let rows = report
        .stale
        .iter()
        .map(|s| {
            let reasons: Vec<String> = s.reasons.iter().map(|r| r.as_str().to_owned()).collect();
            vec![
                s.key.clone(),
                show(&s.kind),
                Some(s.owner.clone()).filter(|o| !o.is_empty()).unwrap_or_else(|| "-".into()),
                reasons.join(","),
                time_or_dash(s.expires_at),
                time_or_dash(s.last_evaluated),
                s.only_value.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["KEY", "KIND", "OWNER", "WHY", "EXPIRES", "LAST EVALUATED", "ONLY VALUE"], rows);
    let unknown: Vec<Vec<String>> = report
        .unknown
        .iter()
        .map(|u| vec![u.key.clone(), u.count.to_string(), time_or_dash(Some(u.last_at))])
        .collect();
    if !unknown.is_empty() {
        say!("\nread by code but not in the store:");
        table(&["KEY", "READS", "LAST"], unknown);
    }
}

/// A time as RFC 3339, or `-`.
fn time_or_dash(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

async fn cmd_history(
    api: &Api,
    json_out: bool,
    key: Option<String>,
    actor: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    query.extend(key.map(|k| ("key", k)));
    query.extend(actor.map(|a| ("actor", a)));
    let body = api.get(&["changes"], &query).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::ChangeList = serde_json::from_value(body)?;
    let rows = list
        .changes
        .iter()
        .map(|c| {
            vec![
                c.seq.to_string(),
                time_or_dash(Some(c.at)),
                match &c.approved_by {
                    Some(by) => format!("{} (approved by {by})", c.actor),
                    None => c.actor.clone(),
                },
                if c.emergency {
                    format!("{} (emergency)", c.action.as_str())
                } else {
                    c.action.as_str().to_owned()
                },
                c.key.clone(),
                c.subject.clone().unwrap_or_else(|| "-".into()),
                {
                    let fields = c.other_fields();
                    let fields =
                        if fields.is_empty() { String::new() } else { format!(" ({})", fields.join(", ")) };
                    format!("{} -> {}{fields}", summary(c.before_state()), summary(c.after_state()))
                },
                c.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "ACTION", "KEY", "USER", "CHANGE", "REASON"], rows);
    Ok(())
}

async fn cmd_preview(
    api: &Api,
    json_out: bool,
    key: String,
    file: std::path::PathBuf,
    users: Vec<String>,
) -> anyhow::Result<()> {
    let raw = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let targeting: Value = serde_yaml_ng::from_str(&raw)
        .map_err(|e| anyhow::anyhow!("{} is not YAML or JSON: {e}", file.display()))?;
    let users = users
        .iter()
        .map(|u| {
            let mut words = u.split_whitespace();
            let id = words.next().filter(|w| !w.contains('=')).map(str::to_owned);
            let attributes = u
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                // `30` and `true` as a number and a boolean (as an app sends them); `"30"` as text.
                .map(|(k, v)| {
                    let typed = v.parse::<f64>().is_ok() || v == "true" || v == "false" || v.starts_with('"');
                    let value = typed.then(|| serde_json::from_str(v).ok()).flatten();
                    (k.to_owned(), value.unwrap_or_else(|| Value::String(v.to_owned())))
                })
                .collect();
            ff_api::PreviewUser { user_id: id, attributes }
        })
        .collect();
    let req = ff_api::PreviewRequest { targeting, version: None, users };
    let (body, _) = api.call(Method::POST, &["flags", &key, "preview"], &[], Some(&req), None).await?;
    let preview: ff_api::Preview = serde_json::from_value(body.clone())?;
    if json_out {
        print(&body)?;
    } else {
        match &preview.problem {
            Some(p) => say!("{key}: the store would refuse this: {p}"),
            None if preview.changes.is_empty() => say!("{key}: no change (version {})", preview.version),
            None => say!("{key}: the store would accept this (version {})", preview.version),
        }
        for c in &preview.changes {
            say!("  {c}");
        }
        if !preview.users.is_empty() {
            let served = |s: Option<&ff_api::Served>| {
                s.map_or("-".to_owned(), |s| {
                    format!("{} ({})", text(&s.value), ff_api::open_feature_variant(s.reason))
                })
            };
            let rows = preview
                .users
                .iter()
                .map(|u| {
                    let mut who = u.user.user_id.clone().unwrap_or_else(|| "anonymous".into());
                    for (k, v) in &u.user.attributes {
                        who.push_str(&format!(" {k}={}", text(v)));
                    }
                    vec![who, served(Some(&u.now)), served(u.edited.as_ref())]
                })
                .collect();
            say!("");
            table(&["USER", "NOW", "WITH THE EDIT"], rows);
        }
    }
    if preview.problem.is_some() {
        bail!("the edit would be refused");
    }
    Ok(())
}

async fn cmd_guard(
    api: &Api,
    json_out: bool,
    key: String,
    set: Option<String>,
    remove: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    if set.is_some() || remove {
        let (body, etag) = api.call(Method::GET, &["flags", &key], &[], None::<&NoFields>, None).await?;
        let detail: ff_api::FlagDetail = serde_json::from_value(body)?;
        let mut targeting = detail.flag.record.targeting;
        targeting.guard = match &set {
            Some(json) => Some(serde_json::from_str(json).context("--set takes the guard as JSON")?),
            None => None,
        };
        let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
        let body = Reasoned::new(patch, reason);
        let (body, _) = api.call(Method::PATCH, &["flags", &key], &[], Some(&body), etag.as_deref()).await?;
        if json_out {
            return print(&body);
        }
        let written: ff_api::FlagWritten = serde_json::from_value(body)?;
        let what = if remove { "guard removed" } else { "guarded" };
        say!("{key}: {what} (version {})", written.flag.version);
        return Ok(());
    }
    let body = api.get(&["flags", &key, "guard"], &[]).await?;
    if json_out {
        return print(&body);
    }
    let view: ff_api::GuardView = serde_json::from_value(body)?;
    match &view.state {
        None => say!("{key}: no guard"),
        Some(st) => {
            let g = &st.guard;
            let latency = g.max_latency_increase.map_or(String::new(), |l| format!(", latency +{l} %"));
            let at = st.regressed_at.map(|t| format!(" (at {})", time_or_dash(Some(t)))).unwrap_or_default();
            say!("{key}: {}{at}", st.verdict);
            say!(
                "  guard: errors +{} points{latency}, alpha {}, {} requests a side, then {:?}",
                g.max_error_increase,
                g.alpha,
                g.min_requests,
                g.action
            );
            let acting = if st.acting { "; the admin's process holds the guardian's lease" } else { "" };
            say!("  since {}; {} instance(s) counted{acting}", time_or_dash(st.started), st.instances);
            if let Some(next) = st.next_step {
                say!("  next ramp step due {}", time_or_dash(Some(next)));
            }
            if let Some(note) = &st.note {
                say!("  {note}");
            }
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v}"));
            let row = |name: String, side: &str, weight: String, c: &ff_store::guard::Summary| {
                vec![
                    name,
                    side.to_owned(),
                    weight,
                    c.requests.to_string(),
                    c.errors.to_string(),
                    format!("{:.2} %", c.error_rate * 100.0),
                    ms(c.p50_ms),
                    ms(c.p95_ms),
                    ms(c.p99_ms),
                ]
            };
            let mut rows: Vec<Vec<String>> = st
                .variations
                .iter()
                .map(|v| {
                    let side = if v.control { "control" } else { "treatment" };
                    row(text(&v.value), side, format!("{} %", f64::from(v.weight) / 100.0), &v.counts)
                })
                .collect();
            rows.push(row("(all)".into(), "control", "-".into(), &st.control));
            rows.push(row("(all)".into(), "treatment", "-".into(), &st.treatment));
            say!("");
            table(
                &[
                    "VARIATION",
                    "SIDE",
                    "WEIGHT",
                    "REQUESTS",
                    "ERRORS",
                    "ERROR RATE",
                    "P50 MS",
                    "P95 MS",
                    "P99 MS",
                ],
                rows,
            );
            if !st.history.is_empty() {
                let rows = st
                    .history
                    .iter()
                    .rev()
                    .take(12)
                    .map(|h| {
                        let side = |c: &ff_store::guard::Summary| {
                            format!(
                                "{} req, {:.2} % errors, p95 {} ms",
                                c.requests,
                                c.error_rate * 100.0,
                                ms(c.p95_ms)
                            )
                        };
                        vec![time_or_dash(Some(h.at)), side(&h.control), side(&h.treatment)]
                    })
                    .collect();
                say!("");
                table(&["WINDOW END", "CONTROL", "TREATMENT"], rows);
            }
        }
    }
    if !view.actions.is_empty() {
        let rows = view
            .actions
            .iter()
            .map(|c| vec![c.seq.to_string(), time_or_dash(Some(c.at)), c.reason.clone().unwrap_or_default()])
            .collect();
        say!("");
        table(&["SEQ", "TIME", "WHAT THE GUARD DID"], rows);
    }
    Ok(())
}

async fn cmd_revert(api: &Api, json_out: bool, seq: u64, reason: Option<String>) -> anyhow::Result<()> {
    let body = Reasoned::new(NoFields {}, reason);
    let (body, _) =
        api.call(Method::POST, &["changes", &seq.to_string(), "revert"], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    let reverted: ff_api::Reverted = serde_json::from_value(body)?;
    say!("reverted change {seq} (as change {})", reverted.change.seq);
    Ok(())
}

async fn cmd_export(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let body = api.get(&["export"], &[]).await?;
    if json_out {
        return print(&body);
    }
    say!("# ff export: every flag and override; `ff import FILE` applies a file like this");
    out(&document(&serde_yaml_ng::to_string(&import::export_of(body)?)?));
    Ok(())
}

async fn cmd_import(
    api: &Api,
    file: std::path::PathBuf,
    dry_run: bool,
    reason: String,
) -> anyhow::Result<()> {
    let raw = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let wanted = import::parse(&raw, &file.display().to_string())?;
    let current = import::export_of(api.get(&["export"], &[]).await?)?;
    let (steps, notes) = import::plan(&current, wanted)?;
    for step in &steps {
        say!("{}", step.says);
    }
    for note in &notes {
        say!("! {note}");
    }
    if dry_run || steps.is_empty() {
        let tail = if dry_run { " (dry run: nothing written)" } else { "" };
        say!("{} change(s){tail}", steps.len());
        return Ok(());
    }
    let count = steps.len();
    let batches = chunks(steps.into_iter().map(|s| s.op).collect());
    let total = batches.len();
    for (i, changes) in batches.into_iter().enumerate() {
        let body = BatchRequest { changes, reason: Some(reason.clone()) };
        match api.call(Method::POST, &["batch"], &[], Some(&body), None).await {
            Ok(_) => {}
            // Held for approval: the rest waits until it is applied.
            Err(e) if e.is::<Held>() && i + 1 < total => {
                if let Some(held) = e.downcast_ref::<Held>() {
                    held.report(false)?;
                }
                bail!(
                    "batch {} of {total} waits for approval; the {i} before it were applied and the rest \
                     were not sent: run `ff import` again once it is approved",
                    i + 1
                );
            }
            Err(e) if e.is::<Held>() => return Err(e),
            Err(e) => {
                return Err(e.context(if total == 1 {
                    "nothing was written".to_owned()
                } else {
                    format!("batch {} of {total} failed; the {i} before it were applied", i + 1)
                }));
            }
        }
    }
    say!("{count} change(s) applied");
    Ok(())
}

async fn cmd_segments(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let body = api.get(&["segments"], &[]).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::SegmentList = serde_json::from_value(body)?;
    let rows = list
        .segments
        .iter()
        .map(|s| {
            vec![
                s.key.clone(),
                s.included.to_string(),
                s.excluded.to_string(),
                s.rules.to_string(),
                s.version.to_string(),
                s.description.clone(),
            ]
        })
        .collect();
    table(&["KEY", "INCLUDED", "EXCLUDED", "RULES", "VERSION", "DESCRIPTION"], rows);
    Ok(())
}

async fn cmd_segment_get(api: &Api, json_out: bool, key: String) -> anyhow::Result<()> {
    let body = api.get(&["segments", &key], &[]).await?;
    if json_out {
        return print(&body);
    }
    // The definition alone, so `ff segment put KEY FILE` takes it back.
    let detail: ff_api::SegmentDetail = serde_json::from_value(body)?;
    let s = &detail.segment;
    say!("# segment {} version {}, updated {}", s.key, s.version, time_or_dash(Some(s.updated_at)));
    out(&document(&serde_yaml_ng::to_string(&s.definition)?));
    Ok(())
}

async fn cmd_segment_put(
    api: &Api,
    json_out: bool,
    key: String,
    file: std::path::PathBuf,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let raw = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let definition: ff_core::SegmentDef = serde_yaml_ng::from_str(&raw)
        .map_err(|e| anyhow::anyhow!("{} is not a segment definition: {e}", file.display()))?;
    let body = Reasoned::new(definition, reason);
    let (body, _) = api.call(Method::PUT, &["segments", &key], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    let written: ff_api::SegmentWritten = serde_json::from_value(body)?;
    match written.version.filter(|_| written.changed) {
        Some(v) => say!("segment {key} saved (version {v})"),
        None => say!("segment {key} unchanged"),
    }
    Ok(())
}

async fn cmd_segment_rm(
    api: &Api,
    json_out: bool,
    key: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = Reasoned::new(NoFields {}, reason);
    let (body, _) = api.call(Method::DELETE, &["segments", &key], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    say!("segment {key} deleted");
    Ok(())
}

async fn cmd_token_create_direct(
    json_out: bool,
    name: String,
    role: Role,
    url: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let store = ff_store::store_from_url(&url).context("DATABASE_URL")?;
    let (record, token) = ff_admin::create_token(&*store, &name, role, "ff-cli", reason.as_deref()).await?;
    if json_out {
        let created = ff_api::TokenCreated { name: record.name, role: record.role, id: record.id, token };
        return print(&serde_json::to_value(created)?);
    }
    say!("{token}");
    eprintln!("token {:?} ({}) created; it is shown only once", record.name, record.role.as_str());
    Ok(())
}

async fn cmd_token_create_via_api(
    api: &Api,
    json_out: bool,
    name: String,
    role: Role,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = ff_api::NewToken { name, role, reason };
    let (body, _) = api.call(Method::POST, &["tokens"], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    let created: ff_api::TokenCreated = serde_json::from_value(body)?;
    say!("{}", created.token);
    eprintln!("token {:?} ({}) created; it is shown only once", created.name, created.role.as_str());
    Ok(())
}

async fn cmd_token_list(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let body = api.get(&["tokens"], &[]).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::TokenList = serde_json::from_value(body)?;
    let rows = list
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.as_str().to_owned(),
                time_or_dash(Some(t.created_at)),
                time_or_dash(t.revoked_at),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "CREATED", "REVOKED"], rows);
    Ok(())
}

async fn cmd_token_revoke(
    api: &Api,
    json_out: bool,
    name: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = Reasoned::new(NoFields {}, reason);
    let (body, _) = api.call(Method::DELETE, &["tokens", &name], &[], Some(&body), None).await?;
    if json_out {
        return print(&body);
    }
    say!("token {name:?} revoked");
    Ok(())
}

async fn switch(
    api: &Api,
    key: &str,
    on: bool,
    reason: Option<String>,
    json_out: bool,
) -> anyhow::Result<()> {
    let body = api.patch_flag(key, FlagPatch { enabled: Some(on), ..FlagPatch::default() }, reason).await?;
    if json_out {
        return print(&body);
    }
    let written: ff_api::FlagWritten = serde_json::from_value(body)?;
    let state = if on { "on" } else { "OFF (its off value for everyone)" };
    say!("{key} is {state} (version {})", written.flag.version);
    Ok(())
}

/// A change the approval policy holds in a request: what the API answered with 202.
#[derive(Debug)]
struct Held {
    made: ff_api::RequestMade,
    body: Value,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.made.message)
    }
}

impl std::error::Error for Held {}

impl Held {
    fn report(&self, json_out: bool) -> anyhow::Result<()> {
        if json_out {
            return print(&self.body);
        }
        let r = &self.made.request;
        say!("held: {}", self.made.message);
        say!("request {}: {}", r.id, r.summary().join("; "));
        say!("another editor approves it with `ff approve {}`", r.id);
        Ok(())
    }
}

/// `--at`: RFC 3339, or `+N` followed by `m`, `h` or `d` from now.
fn parse_at(text: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Some(rel) = text.strip_prefix('+') {
        let bad = || format!("{text:?}: expected +N followed by m, h or d, within a year");
        let (n, per) = [('m', 60), ('h', 3600), ('d', 86_400)]
            .into_iter()
            .find_map(|(unit, secs)| Some((rel.strip_suffix(unit)?, secs)))
            .ok_or_else(bad)?;
        let n: i64 = n.parse().map_err(|_| bad())?;
        let seconds = n.checked_mul(per).filter(|s| (0..=366 * 86_400).contains(s)).ok_or_else(bad)?;
        return Ok(time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds));
    }
    time::OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-12-24T08:00:00Z, nor +30m: {e}"))
}

async fn cmd_webhooks(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let body = api.get(&["webhooks"], &[]).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::WebhookList = serde_json::from_value(body)?;
    let rows = list
        .webhooks
        .iter()
        .map(|h| {
            let last = h.deliveries.first().map_or_else(
                || "-".to_owned(),
                |d| d.error.clone().unwrap_or_else(|| d.status.map_or_else(String::new, |s| s.to_string())),
            );
            vec![
                h.webhook.id.to_string(),
                h.webhook.url.clone(),
                if h.webhook.events.is_empty() { "all".into() } else { h.webhook.events.join(",") },
                if h.webhook.format == ff_api::WebhookFormat::Slack { "slack".into() } else { "json".into() },
                h.delivered_seq.to_string(),
                h.failures.to_string(),
                last,
            ]
        })
        .collect();
    table(&["ID", "URL", "EVENTS", "FORMAT", "DELIVERED", "FAILURES", "LAST"], rows);
    Ok(())
}

/// One change of `key`, applied at `at` (or when approved, after it).
async fn schedule(
    api: &Api,
    json_out: bool,
    key: String,
    patch: FlagPatch,
    reason: Option<String>,
    at: time::OffsetDateTime,
) -> anyhow::Result<()> {
    let body = ff_api::NewRequest {
        changes: vec![BatchOp::Update { key, version: None, patch }],
        reason,
        apply_at: Some(at),
    };
    let (made, _) = api.call(Method::POST, &["requests"], &[], Some(&body), None).await?;
    if json_out {
        return print(&made);
    }
    let r: ff_api::ChangeRequest = serde_json::from_value(made)?;
    let when = r.apply_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    say!(
        "request {} ({}): {} at {}",
        r.id,
        r.status.as_str(),
        r.summary().join("; "),
        when.unwrap_or_default()
    );
    if r.status == ff_api::RequestStatus::Pending {
        say!("it also needs another editor's approval: `ff approve {}`", r.id);
    }
    Ok(())
}

fn request_rows(requests: &[ff_api::ChangeRequest]) -> Vec<Vec<String>> {
    let time = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    };
    requests
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.status.as_str().to_owned(),
                r.summary().join("; "),
                r.author.clone(),
                r.approvals.iter().map(|a| a.by.clone()).collect::<Vec<_>>().join(", "),
                r.apply_at.map(time).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

async fn cmd_requests(api: &Api, json_out: bool, all: bool) -> anyhow::Result<()> {
    let query = if all { vec![("status", "all".to_owned())] } else { Vec::new() };
    let body = api.get(&["requests"], &query).await?;
    if json_out {
        return print(&body);
    }
    let list: ff_api::RequestList = serde_json::from_value(body)?;
    if list.requests.is_empty() {
        say!("{}", if all { "no change requests" } else { "no open change requests" });
        return Ok(());
    }
    table(&["ID", "STATUS", "CHANGES", "AUTHOR", "APPROVED BY", "APPLY AT"], request_rows(&list.requests));
    Ok(())
}

async fn cmd_request(api: &Api, json_out: bool, id: u64) -> anyhow::Result<()> {
    let body = api.get(&["requests", &id.to_string()], &[]).await?;
    if json_out {
        return print(&body);
    }
    let r: ff_api::ChangeRequest = serde_json::from_value(body)?;
    say!("request {} (revision {}): {}", r.id, r.revision, r.status.as_str());
    say!("by {}{}", r.author, r.reason.as_deref().map(|w| format!(": {w}")).unwrap_or_default());
    for line in r.summary() {
        say!("  {line}");
    }
    let bases: Vec<String> = r.base.iter().map(|(k, v)| format!("{k} at version {v}")).collect();
    say!("made on {}", bases.join(", "));
    if r.needs_approval {
        let by: Vec<&str> = r.approvals.iter().map(|a| a.by.as_str()).collect();
        say!("approved by: {}", if by.is_empty() { "nobody yet".to_owned() } else { by.join(", ") });
    }
    if let Some(d) = &r.decision {
        say!(
            "{} by {}{}",
            r.status.as_str(),
            d.by,
            d.reason.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `approve`, `reject` or `rebase` a request.
async fn decide(
    api: &Api,
    json_out: bool,
    id: u64,
    verb: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let path = id.to_string();
    let path = ["requests", path.as_str(), verb];
    let (body, _) = if verb == "approve" {
        // An approval is of what was read: the revision shown here, refused if edited since.
        let read: ff_api::ChangeRequest = serde_json::from_value(api.get(&path[..2], &[]).await?)?;
        if !json_out {
            say!("approving request {id}, revision {}: {}", read.revision, read.summary().join("; "));
        }
        let body = ff_api::Approve { revision: Some(read.revision) };
        api.call(Method::POST, &path, &[], Some(&body), None).await?
    } else {
        api.call(Method::POST, &path, &[], Some(&Reasoned::new(NoFields {}, reason)), None).await?
    };
    if json_out {
        return print(&body);
    }
    let r: ff_api::ChangeRequest = serde_json::from_value(body)?;
    match r.status {
        ff_api::RequestStatus::Applied => {
            say!("request {id} approved and applied: {}", r.summary().join("; "))
        }
        ff_api::RequestStatus::Approved if verb == "approve" => {
            say!("request {id} approved: it applies at its time")
        }
        status => say!("request {id} is {} (revision {})", status.as_str(), r.revision),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ff: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_out = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Not a failure: the change waits in a request.
        Err(e) if e.is::<Held>() => match e.downcast_ref::<Held>().map(|h| h.report(json_out)) {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("ff: {e}");
                ExitCode::FAILURE
            }
            None => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("ff: {}", clean(&format!("{e:#}").replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_from_the_server_reaches_the_terminal_raw() {
        let hostile = "a\u{1b}[2J\r\nb\u{7f}\u{85}\u{202e}\u{2028}\u{e0041}c";
        let shown = clean(hostile);
        assert!(shown.chars().all(|c| !c.is_control() && !is_invisible(c)), "{shown:?}");
        assert!(shown.starts_with("a\\u{1b}[2J\\r\\nb"), "{shown}");
        assert_eq!(clean_lines("x\ny\u{1b}"), "x\ny\\u{1b}", "line breaks stay in documents");
        let json = json_out(&serde_json::json!({ "d": hostile })).unwrap();
        assert!(json.chars().all(|c| c == '\n' || (!c.is_control() && !is_invisible(c))), "{json:?}");
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["d"], hostile, "the JSON still says the same");
        assert!(json.contains("\\u007f") && json.contains("\\udb40\\udc41"), "{json}");
        assert_eq!(text(&Value::String("ok".into())), "ok");
    }
}
