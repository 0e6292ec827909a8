//! The client-side TLS flags (`--ca-file`, `--insecure-skip-verify`,
//! `--client-cert`, `--client-key`), declared once and flattened into
//! `record` (toward its upstream) and `replay` (toward its target), and
//! their one conversion into the library's [`ClientTls`]. Owns no I/O beyond
//! the check that reads the files named; the command decides which side the
//! flags talk to.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Arg, Args};

use tapedeck::tls::{ClientIdentity, ClientTls};

/// How an https:// server is verified, and the client certificate shown to
/// it. The help names the server per command: see [`ClientTlsArgs::help_for`].
#[derive(Debug, Default, Args)]
pub struct ClientTlsArgs {
    /// Also trust this PEM CA certificate for the https:// server.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (self-signed staging; warned once).
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Present this PEM certificate chain to an https:// server that asks for
    /// one (mutual TLS).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Rewrites the flags' help to name the server they talk to (`upstream`
    /// for record, `target` for replay), for
    /// `#[command(mut_args(ClientTlsArgs::help_for("…")))]`.
    // In place, not `mut_arg`: that moves the argument to the end of the
    // command's list.
    pub fn help_for(side: &'static str) -> impl FnMut(Arg) -> Arg {
        move |arg| match arg.get_id().as_str() {
            "ca_file" => arg.help(format!(
                "Also trust this PEM CA certificate for an https:// {side}"
            )),
            "insecure_skip_verify" => arg.help(format!(
                "Accept any {side} certificate (self-signed staging; warned once)"
            )),
            "client_cert" => arg.help(format!(
                "Present this PEM certificate chain to an https:// {side} that asks for one \
                 (mutual TLS)"
            )),
            _ => arg,
        }
    }

    /// These flags where given, the others from `fallback` (record's
    /// `--config` file).
    pub fn or(self, fallback: ClientTlsArgs) -> ClientTlsArgs {
        ClientTlsArgs {
            ca_file: self.ca_file.or(fallback.ca_file),
            insecure_skip_verify: self.insecure_skip_verify || fallback.insecure_skip_verify,
            client_cert: self.client_cert.or(fallback.client_cert),
            client_key: self.client_key.or(fallback.client_key),
        }
    }

    /// The library's settings; checked now (the files are read), so a bad
    /// `--ca-file` or `--client-cert` stops the command at start.
    pub fn into_client_tls(self) -> anyhow::Result<ClientTls> {
        let identity = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
            (None, None) => None,
            _ => bail!("--client-cert and --client-key go together: pass both, or neither"),
        };
        let tls = ClientTls {
            ca_file: self.ca_file,
            insecure_skip_verify: self.insecure_skip_verify,
            identity,
        };
        tls.config().map_err(anyhow::Error::msg)?;
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    #[test]
    fn record_and_replay_name_their_own_side_in_the_tls_help() {
        let mut cli = Cli::command();
        for (command, side) in [("record", "upstream"), ("replay", "target")] {
            let help = cli
                .find_subcommand_mut(command)
                .expect("a command")
                .render_help()
                .to_string();
            for line in [
                format!("Also trust this PEM CA certificate for an https:// {side}\n"),
                format!("Accept any {side} certificate (self-signed staging; warned once)\n"),
                format!("Present this PEM certificate chain to an https:// {side} that asks"),
                "The PEM private key of --client-cert\n".to_string(),
            ] {
                assert!(help.contains(&line), "{command}: {line:?} in\n{help}");
            }
        }
    }
}
