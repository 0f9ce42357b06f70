//! The `authgate` binary: parse the command line, then serve or run a command.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use authgate::cli::{Cli, Command};
use authgate::config::{Config, LoadOptions};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    authgate::cli::init_logging(cli.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match serve(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("authgate: {error:#}");
                ExitCode::FAILURE
            }
        },
        command => authgate::cli::run(command, &cli.config),
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(
        path,
        LoadOptions {
            write_generated: true,
        },
    )?;
    for file in &config.generated {
        tracing::warn!(file = %file.display(), "generated missing key material: development only");
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // One core (a pinned process, a container with one CPU): a current-thread runtime,
    // which costs measurably less per request than a one-worker multi-thread runtime
    // (shared/bench/FLOOR.md). Blocking work still has its own thread pool.
    let workers = config.server.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async {
        let listeners = authgate::Listeners::bind(&config)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        tracing::info!(
            listen = %config.server.listen,
            tls = config.server.tls.is_some(),
            admin = %config
                .admin
                .as_ref()
                .map_or_else(|| "off".to_owned(), |a| a.listen.to_string()),
            workers,
            "authgate serving"
        );
        authgate::serve(
            Arc::new(config),
            listeners,
            shutdown_signal()?,
            Some(reload_signal()?),
        )
        .await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A message at every SIGHUP: reload the config file.
fn reload_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            // A reload already queued covers this one too.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

/// Resolves at the first SIGTERM or SIGINT. A second signal during the drain exits at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered now, before the store opens: a SIGTERM during start-up is a clean stop.
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown signal received");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
    })
}
