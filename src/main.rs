//! The `hookgate` binary: `run` (default), `check`, `sign`, `presets`, `queue move` (docs/src/cli.md).

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
#[command(name = "hookgate", version, about = "Receiver-side webhook gateway: verify, dedupe, route, forward")]
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
        /// Ed25519 / ECDSA presets, for testing: the private key (64 hex digits) of the source's public key
        #[arg(long, value_name = "HEX")]
        private_key: Option<String>,
        /// Body file, or - for standard input
        #[arg(default_value = "-")]
        body: String,
    },
    /// Print the body a route would forward for BODY: its `transform`'s output
    /// (or BODY itself), one line of JSON; exit 1 with the error if it fails
    Transform {
        /// Source name (the key of [sources.NAME])
        #[arg(long)]
        source: String,
        /// The route's name, or its position for an unnamed route
        #[arg(long)]
        route: String,
        /// Body file, or - for standard input
        #[arg(default_value = "-")]
        body: String,
    },
    /// Queue store operations
    Queue {
        #[command(subcommand)]
        op: QueueOp,
    },
    /// List the provider presets, or print one as a [sources.x.verify] block
    Presets {
        /// A preset's name
        name: Option<String>,
        /// Print the list as the guide's Markdown table (docs/src/providers.md)
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Subcommand)]
enum QueueOp {
    /// Move every stored delivery (waiting, retrying, dead) from another queue
    /// store into the config's [queue] store; stop the gateways using either first
    Move {
        /// The store to move from: disk:PATH, or redis:URL (redis://[user:pass@]host:port/db)
        #[arg(long, value_name = "STORE")]
        from: String,
        /// Key prefix of a Redis store to move from [default: hookgate:q:]
        #[arg(long, value_name = "PREFIX")]
        from_prefix: Option<String>,
        /// The config whose [queue] store receives them [default: -c]
        #[arg(long, value_name = "FILE")]
        to_config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Small pages: with transparent huge pages every mostly empty heap arena
    // and the pre-sized dedupe table are backed by 2 MB pages (idle RSS ~20 MB
    // instead of ~8 MB). Applies to this process only; failure is harmless.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check => check(&cli.config),
        Command::Sign { source, event_type, id, timestamp, curl, private_key, body } => sign(
            &cli.config,
            &source,
            SignArgs {
                event_type: event_type.as_deref(),
                id: id.as_deref(),
                timestamp: timestamp.as_deref(),
                private_key: private_key.as_deref(),
            },
            curl.as_deref(),
            &body,
        ),
        Command::Presets { name, markdown } => presets(name.as_deref(), markdown),
        Command::Transform { source, route, body } => transform(&cli.config, &source, &route, &body),
        Command::Queue { op: QueueOp::Move { from, from_prefix, to_config } } => {
            queue_move(to_config.as_deref().unwrap_or(&cli.config), &from, from_prefix.as_deref())
        }
    }
}

fn presets(name: Option<&str>, markdown: bool) -> ExitCode {
    use hookgate::config::presets;
    match name {
        None if markdown => print!("{}", presets::markdown_table()),
        None => {
            let width = presets::all().iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in presets::all() {
                println!("{:width$}  {}", p.name, p.description);
            }
        }
        Some(name) => match presets::get(name) {
            Some(p) => print!("{}", p.to_toml()),
            None => {
                let names: Vec<_> = presets::all().iter().map(|p| p.name.as_str()).collect();
                eprintln!("no preset named {name:?}; presets: {}", names.join(", "));
                return ExitCode::from(1);
            }
        },
    }
    ExitCode::SUCCESS
}

/// `hookgate queue move`: every delivery of `from` into `config`'s queue store.
fn queue_move(config: &Path, from: &str, prefix: Option<&str>) -> ExitCode {
    use hookgate::queue::{Legacy, marker, transfer};
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(target) = cfg.queue.clone() else {
        eprintln!("{}: no [queue] table: nothing to move into", config.display());
        return ExitCode::from(1);
    };
    let source = match marker::parse(from, prefix) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--from {e}");
            return ExitCode::from(1);
        }
    };
    let (from_text, to_text) = (marker::describe(&source), marker::describe(&target));
    if from_text == to_text {
        eprintln!("--from names the config's own queue store ({to_text}): nothing to move");
        return ExitCode::from(1);
    }
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let legacy = Legacy::of(&cfg);
    let moved = rt.block_on(async {
        let mut from_store = transfer::Store::open(&source, &legacy)?;
        // A Redis store written by route position: its keys move to identities first.
        if let transfer::Store::Redis(r) = &from_store {
            r.migrate(&legacy).await?;
        }
        let mut to_store = transfer::Store::open(&target, &legacy)?;
        let moved = transfer::move_all(&mut from_store, &mut to_store).await?;
        Ok::<_, hookgate::queue::QueueError>(moved)
    });
    match moved {
        Ok(m) => {
            println!(
                "moved {} deliveries ({} waiting, {} retrying, {} dead) from {from_text} to {to_text}",
                m.total(),
                m.waiting,
                m.retrying,
                m.dead
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "queue move from {from_text} to {to_text} stopped: {e} (what was moved stays moved; run it again to go on)"
            );
            ExitCode::from(1)
        }
    }
}

/// What `sign` takes besides the source and the body.
struct SignArgs<'a> {
    event_type: Option<&'a str>,
    id: Option<&'a str>,
    timestamp: Option<&'a str>,
    private_key: Option<&'a str>,
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
            // What the signature does not cover (SPEC §10): worth knowing, not an error.
            for src in &cfg.sources {
                for (field, from) in src.verifier.plan.unsigned() {
                    println!(
                        "  note: sources.{}: {} is unsigned (read from {from}); anyone with a captured delivery can change it",
                        src.name,
                        field.name()
                    );
                }
                for (i, route) in src.routes.iter().enumerate() {
                    if route.queue().is_some() && route.name.is_none() {
                        println!(
                            "  warning: sources.{}.routes[{i}]: a queue route without `name`: its stored deliveries belong to its events ({}); changing them orphans what is queued. Set name = \"...\"",
                            src.name, route.identity
                        );
                    }
                }
                if src.dedupe_body {
                    println!(
                        "  note: sources.{}: the body's SHA-256 is deduplicated too (dedupe_body), so a replayed body under a fresh ID is a duplicate",
                        src.name
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Quotes `s` for bash, so the printed command can be pasted as is.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The source named `name`, or `None` after saying which there are.
fn find_source<'c>(cfg: &'c hookgate::config::Config, name: &str) -> Option<&'c hookgate::config::Source> {
    let found = cfg.sources.iter().find(|s| s.name == name);
    if found.is_none() {
        let names: Vec<_> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!("no source named {name:?}; configured: {}", names.join(", "));
    }
    found
}

/// A body file, or standard input for `-`.
fn read_body(arg: &str) -> Result<Vec<u8>, ExitCode> {
    let mut body = Vec::new();
    let read = if arg == "-" {
        std::io::stdin().read_to_end(&mut body).map(drop)
    } else {
        std::fs::read(arg).map(|b| body = b)
    };
    read.map(|()| body).map_err(|e| {
        eprintln!("cannot read body {arg}: {e}");
        ExitCode::from(1)
    })
}

fn transform(path: &Path, source: &str, route: &str, body_arg: &str) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(src) = find_source(&cfg, source) else { return ExitCode::from(1) };
    let Some(r) = src.routes.iter().find(|r| &*r.label == route) else {
        let labels: Vec<_> = src.routes.iter().map(|r| &*r.label).collect();
        eprintln!("no route {route:?} in source {source:?}; its routes: {}", labels.join(", "));
        return ExitCode::from(1);
    };
    let body = match read_body(body_arg) {
        Ok(b) => b,
        Err(code) => return code,
    };
    match r.body(&body.into()) {
        Ok(out) => {
            println!("{}", String::from_utf8_lossy(&out));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("transform_failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn sign(path: &Path, source: &str, args: SignArgs<'_>, curl: Option<&str>, body_arg: &str) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(src) = find_source(&cfg, source) else { return ExitCode::from(1) };
    let body = match read_body(body_arg) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let req = SignRequest {
        body: &body,
        id: args.id,
        event_type: args.event_type,
        timestamp: args.timestamp,
        now: SystemTime::now(),
        private_key: args.private_key,
    };
    let signed = match src.verifier.sign(req) {
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
            if let Some(b) = &signed.body {
                println!("\n{}", String::from_utf8_lossy(b));
            }
        }
        Some(url) => {
            let mut cmd = format!("curl -sS -i -X POST {}", shell_quote(url));
            for (name, value) in &signed.headers {
                cmd.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
            }
            let body = signed.body.as_deref().unwrap_or(&body);
            cmd.push_str(&format!(" --data-binary {}", shell_quote(&String::from_utf8_lossy(body))));
            println!("{cmd}");
        }
    }
    ExitCode::SUCCESS
}

/// Without `HOOKGATE_LOG`: hookgate's own lines from `info` up, other crates'
/// warnings and errors only (the queue's storage engine logs its compactions
/// and flushes at `info`, which says nothing to an operator).
const DEFAULT_LOG_FILTER: &str = "warn,hookgate=info";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour only on a terminal: files, pipes, journald and `docker logs` get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

/// How many webhook-serving threads: `HOOKGATE_WORKERS`, else one per CPU.
fn worker_count() -> usize {
    std::env::var("HOOKGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn run(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(cfg.log.format);
    match current_thread_runtime() {
        Ok(rt) => rt.block_on(serve(path.to_owned(), cfg)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            ExitCode::from(1)
        }
    }
}

/// Binds `addr` with `SO_REUSEPORT`, so every worker thread can own a listener on it.
fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves until SIGTERM/SIGINT. Webhook traffic runs on one single-threaded
/// runtime per worker thread, each with its own `SO_REUSEPORT` listener and
/// upstream connection pool (no cross-thread wake-ups on the hot path; the
/// kernel spreads connections). Admin traffic and signals run on this thread.
async fn serve(path: PathBuf, cfg: Config) -> ExitCode {
    // A previous queue store still holding deliveries is named at ERROR (SPEC §12).
    if let Some(q) = &cfg.queue {
        hookgate::queue::marker::check(&path, q).await;
    }
    let listen = cfg.server.listen;
    let admin_listen = cfg.server.admin_listen;
    let app = match App::new(cfg) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };
    // The first bind resolves port 0; the others join it.
    let mut listeners = Vec::new();
    let mut bound = listen;
    for _ in 0..worker_count() {
        match bind_reuseport(bound).and_then(|l| {
            bound = l.local_addr()?;
            l.into_std()
        }) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                tracing::error!(error = %e, %listen, "cannot listen");
                return ExitCode::from(1);
            }
        }
    }
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
    // The handlers are installed here, before "hookgate serving" is logged: a
    // SIGTERM right after it must not find the default action (death).
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(hup), Ok(term), Ok(int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    tokio::spawn(signals(app.clone(), path, stop_tx, [hup, term, int]));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // One runtime per worker thread, made here so the queue's attempts can be
    // handed to them too.
    let mut runtimes = Vec::new();
    for _ in 0..listeners.len() {
        match current_thread_runtime() {
            Ok(rt) => runtimes.push(rt),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker runtime");
                return ExitCode::from(1);
            }
        }
    }
    // Queue mode's delivery loops run on this thread's runtime, their attempts
    // on the worker runtimes; those stay up until the loops are done.
    let (queue_done_tx, queue_done) = watch::channel(app.queue.is_none());
    let handles = runtimes.iter().map(|rt| rt.handle().clone()).collect();
    let queue_runner = app.queue.clone().map(|q| {
        let run = hookgate::queue::worker::run(app.clone(), q, stop_rx.clone(), handles);
        tokio::spawn(async move {
            run.await;
            let _ = queue_done_tx.send(true);
        })
    });

    let mut workers = Vec::new();
    for (i, (std_listener, rt)) in listeners.into_iter().zip(runtimes).enumerate() {
        let (app, rx, queue_done) = (app.clone(), stop_rx.clone(), queue_done.clone());
        let spawned = std::thread::Builder::new().name(format!("hookgate-worker-{i}")).spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => hookgate::server::serve(app, l, stopped(rx)).await,
                    Err(e) => tracing::error!(error = %e, "cannot register the listener"),
                }
                // Queue attempts in flight on this runtime finish (or are
                // given up by their worker) before it is dropped.
                let _ = stopped(queue_done).await;
            });
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker thread");
                return ExitCode::from(1);
            }
        }
    }

    // The bound addresses (not the configured ones), so port 0 is usable.
    let admin_bound = admin.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string());
    tracing::info!(
        listen = %bound,
        admin = admin_bound.as_deref().unwrap_or("disabled"),
        workers = workers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "hookgate serving"
    );
    match admin {
        Some(l) => hookgate::server::serve_admin(app, l, stopped(stop_rx)).await,
        None => stopped(stop_rx).await,
    }
    if let Some(runner) = queue_runner {
        let _ = runner.await;
    }
    let joined = tokio::task::spawn_blocking(move || workers.into_iter().all(|w| w.join().is_ok())).await;
    if !matches!(joined, Ok(true)) {
        tracing::error!("a worker thread panicked");
        return ExitCode::from(1);
    }
    tracing::info!("hookgate stopped");
    ExitCode::SUCCESS
}

/// SIGHUP reloads the config; SIGTERM/SIGINT start the graceful shutdown.
async fn signals(
    app: std::sync::Arc<App>,
    path: PathBuf,
    stop: watch::Sender<bool>,
    [mut hup, mut term, mut int]: [tokio::signal::unix::Signal; 3],
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                app.reload_file(&path);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop.send(true);
}
