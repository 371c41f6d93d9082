//! The `hookgate` binary: `run` (default), `check`, `sign` (SPEC §1).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use hookgate::App;
use hookgate::config::{Config, LogFormat};
use hookgate::verify::sign::SignRequest;
use tokio::sync::watch;

/// See Cargo.toml: measured cheaper than glibc malloc on the request path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Receiver-side webhook gateway: verify, dedupe, route, forward"
)]
struct Cli {
    /// Config file [default: $HOOKGATE_CONFIG, then ./hookgate.toml]
    #[arg(
        short,
        long,
        global = true,
        env = "HOOKGATE_CONFIG",
        default_value = "hookgate.toml",
        hide_default_value = true,
        hide_env = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve webhook traffic (the default)
    Run,
    /// Validate the config file; exit 0, or 1 listing every error
    Check,
    /// Print the headers (or a curl command) a real sender would send for BODY
    Sign {
        /// Source name (the key of [sources.NAME])
        #[arg(long)]
        source: String,
        /// Event type, for providers that send it in a header
        #[arg(long)]
        event_type: Option<String>,
        /// Delivery ID, for providers that send it in a header [default: random]
        #[arg(long)]
        id: Option<String>,
        /// Timestamp text to sign [default: now, in the provider's format]
        #[arg(long)]
        timestamp: Option<String>,
        /// Print one curl command that posts to URL instead of header lines
        #[arg(long, value_name = "URL")]
        curl: Option<String>,
        /// Body file, or - for standard input
        #[arg(default_value = "-")]
        body: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check => check(&cli.config),
        Command::Sign {
            source,
            event_type,
            id,
            timestamp,
            curl,
            body,
        } => sign(
            &cli.config,
            &source,
            event_type.as_deref(),
            id.as_deref(),
            timestamp.as_deref(),
            curl.as_deref(),
            &body,
        ),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!(
            "{}: invalid config ({} error{}):",
            path.display(),
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        );
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(1)
    })
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} source{})",
                path.display(),
                cfg.sources.len(),
                if cfg.sources.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Quotes `s` for bash, so the printed command can be pasted as is.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sign(
    path: &Path,
    source: &str,
    event_type: Option<&str>,
    id: Option<&str>,
    timestamp: Option<&str>,
    curl: Option<&str>,
    body_arg: &str,
) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(src) = cfg.sources.iter().find(|s| s.name == source) else {
        let names: Vec<_> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "no source named {source:?}; configured: {}",
            names.join(", ")
        );
        return ExitCode::from(1);
    };
    let mut body = Vec::new();
    let read = if body_arg == "-" {
        std::io::stdin().read_to_end(&mut body).map(drop)
    } else {
        std::fs::read(body_arg).map(|b| body = b)
    };
    if let Err(e) = read {
        eprintln!("cannot read body {body_arg}: {e}");
        return ExitCode::from(1);
    }
    let signed = match src.verifier.sign(SignRequest {
        body: &body,
        id,
        event_type,
        timestamp,
        now: SystemTime::now(),
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot sign for {source}: {e}");
            return ExitCode::from(1);
        }
    };
    match curl {
        None => {
            for note in &signed.notes {
                println!("# {note}");
            }
            for (name, value) in &signed.headers {
                println!("{name}: {value}");
            }
        }
        Some(url) => {
            let mut cmd = format!("curl -sS -i -X POST {}", shell_quote(url));
            for (name, value) in &signed.headers {
                cmd.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
            }
            cmd.push_str(&format!(
                " --data-binary {}",
                shell_quote(&String::from_utf8_lossy(&body))
            ));
            println!("{cmd}");
        }
    }
    ExitCode::SUCCESS
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(cfg.log.format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("HOOKGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(path.to_owned(), cfg))
}

async fn serve(path: PathBuf, cfg: Config) -> ExitCode {
    let listen = cfg.server.listen;
    let admin_listen = cfg.server.admin_listen;
    let app = match App::new(cfg) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the dedupe store");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, %listen, "cannot listen");
            return ExitCode::from(1);
        }
    };
    let admin = match admin_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, listen = %addr, "cannot listen (admin)");
                return ExitCode::from(1);
            }
        },
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(app.clone(), path, stop_tx));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The bound addresses (not the configured ones), so port 0 is usable.
    let bound = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    let admin_bound = admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    tracing::info!(listen = %bound, admin = admin_bound.as_deref().unwrap_or("disabled"), version = env!("CARGO_PKG_VERSION"), "hookgate serving");
    let web = hookgate::server::serve(app.clone(), listener, stopped(stop_rx.clone()));
    match admin {
        Some(l) => {
            tokio::join!(web, hookgate::server::serve_admin(app, l, stopped(stop_rx)));
        }
        None => web.await,
    }
    tracing::info!("hookgate stopped");
    ExitCode::SUCCESS
}

/// SIGHUP reloads the config; SIGTERM/SIGINT start the graceful shutdown.
async fn signals(app: std::sync::Arc<App>, path: PathBuf, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match Config::load(&path) {
                Ok(cfg) => match app.reload(cfg) {
                    Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
                    Err(e) => tracing::error!(error = %e, "reload failed; keeping the old config"),
                },
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!(error = %e, "invalid config on reload; keeping the old config");
                    }
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop.send(true);
}
