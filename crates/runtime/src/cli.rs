//! The command line every service binary shares: `serve` (default), `migrate`, or
//! `healthcheck`.

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the service until SIGTERM/SIGINT.
    Serve,
    /// Apply the service's migrations (creating its database if needed) and exit.
    Migrate,
    /// Ask the service running beside it whether it is ready: for container health checks
    /// in images that have no shell or HTTP client.
    Healthcheck,
    /// Print usage and exit.
    Help,
}

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let command = match args.next().as_deref() {
            None | Some("serve") => Self::Serve,
            Some("migrate") => Self::Migrate,
            Some("healthcheck") => Self::Healthcheck,
            Some("help" | "-h" | "--help") => Self::Help,
            Some(other) => return Err(format!("unknown command {other:?}")),
        };
        match args.next() {
            Some(extra) => Err(format!("unexpected argument {extra:?}")),
            None => Ok(command),
        }
    }

    /// Usage text for `name`.
    pub fn usage(name: &str, prefix: &str) -> String {
        format!(
            "usage: {name} [serve|migrate|healthcheck]\n\n  serve        run the service (default)\n  migrate      apply database migrations and exit\n  \
             healthcheck  exit 0 if the service on this host's {prefix}HTTP_PORT is ready\n\n\
             Configuration comes from {prefix}* environment variables (and .env); see README.md.\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Command::parse(args.iter().map(ToString::to_string))
    }

    #[test]
    fn serve_is_the_default() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&["serve"]), Ok(Command::Serve));
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate));
        assert_eq!(parse(&["healthcheck"]), Ok(Command::Healthcheck));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
    }

    #[test]
    fn unknown_commands_and_extra_arguments_are_refused() {
        assert!(parse(&["deploy"]).unwrap_err().contains("deploy"));
        assert!(parse(&["serve", "now"]).unwrap_err().contains("now"));
    }
}
