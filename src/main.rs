//! The `portcullis` command: run a gateway, or check a config file.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::config::{self, Config};
use portcullis::telemetry::{self, LogFormat};
use portcullis::PlanError;
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
    /// Validate the config and print the routing table; with --diff, compare it with the
    /// running gateway instead (exit 0: no change, 1: invalid or unreachable, 2: changes).
    Check {
        /// Compare with the config the running gateway serves.
        #[arg(long)]
        diff: bool,
        /// The running gateway's admin API (default: the address the config gives it).
        #[arg(long, requires = "diff")]
        admin: Option<String>,
    },
}

/// `check --diff` found changes.
const EXIT_CHANGES: u8 = 2;

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
        Command::Check { diff: true, admin } => return check_diff(&config, admin),
        Command::Check { .. } => {
            print_routes(&config);
            Ok(())
        }
        Command::Run => run(config, cli.workers, cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, workers: Option<usize>, path: PathBuf) -> anyhow::Result<()> {
    if workers == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    let options = portcullis::Options {
        workers,
        config_path: Some(path),
        env: None,
    };
    let running = portcullis::start(config, options)?;
    for (name, address) in running.listeners() {
        tracing::info!(listener = %name, %address, "listening");
    }
    if let Some(address) = running.admin_address() {
        tracing::info!(listener = "admin", %address, "listening");
    }
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    signals.block_on(serve_signals(&running))?;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown();
    Ok(())
}

/// SIGHUP reloads the config; SIGTERM and SIGINT return (to shut down).
#[cfg(unix)]
async fn serve_signals(running: &portcullis::Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Errors are logged by the reloader; the running config stays.
                let _ = running.reload();
            }
        }
    }
}

#[cfg(not(unix))]
async fn serve_signals(_running: &portcullis::Running) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("Ctrl-C handler")
}

/// Prints what `config` changes against the running gateway's, by section.
fn check_diff(config: &Config, admin: Option<String>) -> ExitCode {
    use portcullis::config::diff::ItemChange;
    let Some(admin) = admin.or_else(|| config.admin_url()) else {
        eprintln!("error: the config turns the admin API off: give --admin URL");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let running = match runtime.block_on(portcullis::running_config(&admin)) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("error: cannot read the running config: {error}");
            return ExitCode::FAILURE;
        }
    };
    let changes = config.diff_against(&running);
    if changes.is_empty() {
        println!("configuration OK: no changes against the gateway at {admin}");
        return ExitCode::SUCCESS;
    }
    let mut section = "";
    for change in &changes {
        if change.section != section {
            section = &change.section;
            println!("{section}:");
        }
        let restart = if change.needs_restart {
            "  (needs a restart: a reload does not apply it)"
        } else {
            ""
        };
        match &change.change {
            ItemChange::Added => println!("  + {}{restart}", change.name),
            ItemChange::Removed => println!("  - {}{restart}", change.name),
            ItemChange::Changed(keys) => {
                println!("  ~ {}: {}{restart}", change.name, keys.join(", "))
            }
        }
    }
    let token = std::env::var("PORTCULLIS_ADMIN_TOKEN").ok();
    let token = token.as_deref().or(config.admin_token());
    match runtime.block_on(portcullis::reload_plan(&admin, config.text(), token)) {
        Ok(state) => print_state_plan(&state),
        Err(PlanError::Rejected(errors)) => {
            eprintln!("error: the gateway at {admin} would reject this config:");
            for error in errors {
                eprintln!("  {error}");
            }
            return ExitCode::FAILURE;
        }
        Err(PlanError::Unavailable(reason)) => {
            eprintln!("\nno state report: {reason}");
        }
    }
    let restarts = changes.iter().filter(|c| c.needs_restart).count();
    println!(
        "\n{} change(s) against the gateway at {admin}, {restarts} needing a restart",
        changes.len()
    );
    ExitCode::from(EXIT_CHANGES)
}

/// The state report: what a reload would carry over and reset, changed state first.
fn print_state_plan(state: &serde_json::Value) {
    let lines = state.as_array().map(Vec::as_slice).unwrap_or_default();
    println!("\nstate:");
    for fate in ["reset", "dropped", "new", "carried"] {
        for line in lines.iter().filter(|l| l["fate"] == fate) {
            let field = |key: &str| line[key].as_str().unwrap_or("").to_string();
            let place = match field("slot").as_str() {
                "" => field("owner"),
                slot => format!("{} {slot}", field("owner")),
            };
            println!("  {fate:<8} {:<16} {place}", field("state"));
        }
    }
}

fn print_routes(config: &Config) {
    let mut rows = vec![[
        "ROUTE".to_string(),
        "MATCH".to_string(),
        "ACTION".to_string(),
        "FILTERS".to_string(),
    ]];
    rows.extend(config.route_table());
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
    let (routes, upstreams, listeners) = config.counts();
    println!(
        "\n{routes} route(s), {upstreams} upstream(s), {listeners} listener(s): configuration OK"
    );
}
