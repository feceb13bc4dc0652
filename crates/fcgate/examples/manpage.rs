//! Writes fcgate's man pages from the command-line definition, so they cannot drift from
//! `--help`: `fcgate.1` and one page per subcommand (`fcgate-check.1`, `fcgate-demo-app.1`).
//!
//! ```sh
//! cargo run -p fcgate --example manpage -- target/man    # the directory defaults to target/man
//! man -l target/man/fcgate.1
//! ```
//!
//! `scripts/package` runs it before building the Debian package, which installs the pages
//! (gzipped) in /usr/share/man/man1/.

use std::path::PathBuf;

use clap::CommandFactory;

/// What `--help` cannot say, added to `fcgate.1` before clap's closing VERSION section.
const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/fcgate/fcgate.toml\fR
The configuration file the packaged systemd unit passes to \fB\-\-config\fR. Every key has
the flag of the same name with dashes (\fImax_conns\fR is \fB\-\-max\-conns\fR); a flag
wins over the file, the file over the default. \fBfcgate check \-\-config\fR \fIFILE\fR
validates a file and names the bad key.
.TP
\fI/lib/systemd/system/fcgate.service\fR
The systemd unit (\fBType=notify\fR, runs as www\-data). The package neither enables nor
starts it: \fBsystemctl enable \-\-now fcgate\fR.
.TP
\fI/var/log/fcgate/\fR
Where the packaged configuration writes the access log.
.TP
\fI/usr/share/doc/fcgate/configuration.md\fR
Every setting, its default and the reasoning behind it.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting connections, give in\-flight requests \fIshutdown_timeout\fR to finish, exit.
.TP
\fBSIGHUP\fR
Read the configuration file again (\fBsystemctl reload fcgate\fR).
.TP
\fBSIGUSR1\fR
Reopen the access log file, after logrotate moved it.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Which diagnostics go to standard error, e.g. \fBdebug\fR for per\-request logs (connection
reuse, queueing); the default is \fBinfo\fR.
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd: fcgate reports READY=1 once it listens and STOPPING=1 when it drains.
.SH EXIT STATUS
0 after a clean shutdown or a valid configuration (\fBcheck\fR); 1 on any error, which is
printed on standard error.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBsystemd.service\fR(5), \fBlogrotate\fR(8)
"#;

fn main() -> std::io::Result<()> {
    let out_dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/man"), PathBuf::from);
    std::fs::create_dir_all(&out_dir)?;
    // Pages of subcommands that no longer exist would be packaged too.
    for entry in std::fs::read_dir(&out_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.starts_with("fcgate") && name.ends_with(".1") {
            std::fs::remove_file(&path)?;
        }
    }
    // fcgate.1 plus a page per subcommand (clap's own `help` subcommand left out).
    clap_mangen::generate_to(fcgate::cli::Cli::command(), &out_dir)?;

    let main_page = out_dir.join("fcgate.1");
    let page = std::fs::read_to_string(&main_page)?;
    let page = match page.find("\n.SH VERSION\n") {
        Some(at) => format!("{}\n{EXTRA_SECTIONS}{}", &page[..at], &page[at + 1..]),
        None => format!("{page}{EXTRA_SECTIONS}"),
    };
    std::fs::write(&main_page, page)?;

    let mut written: Vec<PathBuf> = std::fs::read_dir(&out_dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    written.retain(|path| path.extension().is_some_and(|extension| extension == "1"));
    written.sort();
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
