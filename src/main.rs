//! The `portcullis` command: run a gateway, or check a config file.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::config::{self, Action, Config};
use portcullis::router::{HostMatch, PathMatch};
use portcullis::telemetry::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A fast, small reverse-proxy API gateway"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, default_value = "gateway.yaml", global = true)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = Format::Pretty, global = true)]
    log_format: Format,
    /// Log level or tracing filter (RUST_LOG wins when set).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Worker threads (default: `workers:` in the config, else the number of cores).
    #[arg(long, global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config and print the routing table.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        Format::Pretty => LogFormat::Pretty,
        Format::Json => LogFormat::Json,
    };
    telemetry::init(format, &cli.log_level);
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print_routes(&config);
            Ok(())
        }
        Command::Run => run(config, cli.workers),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, workers: Option<usize>) -> anyhow::Result<()> {
    if workers == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    let running = portcullis::start(config, portcullis::Options { workers })?;
    for (name, address) in running.listeners() {
        tracing::info!(listener = %name, %address, "listening");
    }
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    signals.block_on(wait_for_stop())?;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown();
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("Ctrl-C handler")?;
    Ok(())
}

fn print_routes(config: &Config) {
    let mut rows = vec![[
        "ROUTE".to_string(),
        "MATCH".to_string(),
        "ACTION".to_string(),
        "FILTERS".to_string(),
    ]];
    for route in &config.routes {
        let m = &route.matcher;
        let mut parts = Vec::new();
        match &m.host {
            HostMatch::Any => {}
            HostMatch::Exact(host) => parts.push(format!("host={host}")),
            HostMatch::Suffix(suffix) => parts.push(format!("host=*{suffix}")),
        }
        parts.push(match &m.path {
            PathMatch::Exact(path) => format!("path={path}"),
            PathMatch::Prefix(prefix) => format!("prefix={prefix}"),
            PathMatch::Regex(regex) => format!("regex={}", regex.as_str()),
        });
        if let Some(methods) = &m.methods {
            let names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
            parts.push(format!("methods={}", names.join(",")));
        }
        if !m.headers.is_empty() {
            parts.push(format!("headers={}", m.headers.len()));
        }
        let action = match &route.action {
            Action::Proxy { upstream, .. } => format!("upstream {upstream}"),
            Action::Respond(respond) => format!("respond {}", respond.status.as_u16()),
            Action::Redirect { status, .. } => format!("redirect {}", status.as_u16()),
        };
        rows.push([route.name.clone(), parts.join(" "), action, "-".to_string()]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    println!(
        "\n{} route(s), {} upstream(s), {} listener(s): configuration OK",
        config.routes.len(),
        config.upstreams.len(),
        config.listeners.len()
    );
}
