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
    /// The venue profiles Connect may name: all of them, or what one sets.
    Profiles {
        /// A profile to show in full (TOML, as a profiles file writes it).
        name: Option<String>,
        /// Also read this profiles file, as `wsm serve --profiles` does.
        #[arg(long, env = "WSM_PROFILES")]
        profiles: Option<std::path::PathBuf>,
    },
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
            match env_blame(&e) {
                Some(message) => eprintln!("{message}"),
                None => {
                    let _ = e.print();
                }
            }
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
        Command::Profiles { name, profiles } => show_profiles(name.as_deref(), profiles.as_deref()),
        Command::Client(command) => runtime.block_on(command.run()),
    }
}

fn show_profiles(name: Option<&str>, file: Option<&std::path::Path>) -> ExitCode {
    let profiles = match file {
        Some(path) => match wsm::venue::Profiles::with_file(path) {
            Ok(profiles) => profiles,
            Err(e) => {
                eprintln!("error: INVALID_ARGUMENT: {e}");
                return ExitCode::from(1);
            }
        },
        None => wsm::venue::Profiles::shipped(),
    };
    let Some(name) = name else {
        let width = profiles.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, profile) in profiles.iter() {
            println!("{name:width$}  {}", profile.about);
        }
        return ExitCode::SUCCESS;
    };
    let Some(profile) = profiles.get(name) else {
        let known: Vec<&str> = profiles.iter().map(|(n, _)| n).collect();
        eprintln!(
            "error: NOT_FOUND: no profile {name:?}; known: {}",
            known.join(", ")
        );
        return ExitCode::from(1);
    };
    println!("# {name}: {}", profile.about);
    println!("# from {}", profile.source);
    match toml::to_string(&profile.options) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: INTERNAL: cannot print profile {name}: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// A bad value that came from an environment variable, not the command line, named as such: clap
/// would blame `--http-port` for `WSM_HTTP_PORT=abc`, a flag the user never typed.
fn env_blame(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = shown
        .split_whitespace()
        .next()?
        .strip_prefix("--")?
        .to_owned();
    let argv: Vec<String> = std::env::args().collect();
    let command = Cli::command();
    let arg = command
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))?;
    let typed = argv.iter().any(|x| {
        x == &format!("--{long}")
            || x.starts_with(&format!("--{long}="))
            || arg
                .get_short()
                .is_some_and(|s| x.starts_with(&format!("-{s}")))
    });
    if typed {
        return None;
    }
    let env = arg.get_env()?.to_str()?.to_owned();
    let value = std::env::var(&env).ok()?;
    let first = e.to_string();
    let why = first.lines().next()?.rsplit(": ").next()?.to_owned();
    Some(format!(
        "error: invalid value {value:?} in the environment variable {env} (it sets --{long}): {why}"
    ))
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
