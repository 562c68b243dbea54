//! `wsm`: the WebSocket Manager server (`wsm serve`) and a command-line client for a running one.
//!
//! Client commands talk gRPC to `--server` (default `http://127.0.0.1:5002`). Failures print
//! `error: <CODE>: <message>` on stderr and exit 1; so does a bad flag value.

mod client;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wsm::config::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "wsm",
    version,
    about = "WebSocket Manager: outbound WebSocket connections published to pub/sub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded default: memory state and bus, nothing to install).
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not failures; every usage error exits 1 (SPEC: invalid values
            // exit 1 with a message).
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: INTERNAL: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Client(command) => runtime.block_on(command.run()),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let filter = EnvFilter::try_new(&args.log_level);
    let filter = match filter {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: invalid --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or collector gets no escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let running = match wsm::server::start(&args, wsm::server::termination()).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Scripts read the actual ports from these lines (a port of 0 picks a free one).
    println!(
        "wsm {} instance {}",
        env!("CARGO_PKG_VERSION"),
        running.service.instance_id()
    );
    println!("http listening on {}", running.http_addr);
    println!("grpc listening on {}", running.grpc_addr);
    tracing::info!(
        http = %running.http_addr,
        grpc = %running.grpc_addr,
        state = ?args.state,
        pubsub = ?args.pubsub,
        "serving"
    );
    running.wait().await;
    ExitCode::SUCCESS
}
