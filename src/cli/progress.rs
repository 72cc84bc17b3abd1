//! What the command line makes of the library's progress reports: a
//! progress line on a terminal (indicatif), a `progress` log event at most
//! every 10 s in JSON log mode, nothing otherwise (pipes, `-q`, `--json`).
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{
    BinaryBytes, HumanCount, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget,
    ProgressStyle,
};

use crate::base::progress::{self, DynProgress, Logged, Progress, Total, Unit};
use crate::cli::output::LogFormat;

/// How often JSON log mode reports a long run.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// A progress line on stderr.
    Line,
    /// `progress` events in the JSON log.
    Log,
}

/// The mode for these flags and streams.
pub fn mode(json: bool, quiet: bool, log_format: LogFormat, terminals: bool) -> Mode {
    if quiet {
        Mode::Off
    } else if log_format == LogFormat::Json {
        Mode::Log
    } else if json || !terminals {
        Mode::Off
    } else {
        Mode::Line
    }
}

/// Whether both stdout and stderr are terminals (a piped stdout means a
/// script is reading: no progress line in the way).
pub fn on_terminals() -> bool {
    io::stdout().is_terminal() && io::stderr().is_terminal()
}

static MODE: OnceLock<Mode> = OnceLock::new();
static LINES: OnceLock<MultiProgress> = OnceLock::new();

/// Sets the process's mode, once, before any log line is written.
pub fn init(mode: Mode) {
    let _ = MODE.set(mode);
    if mode == Mode::Line {
        let _ = LINES.set(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    }
}

/// The progress receiver for the catalogs the commands open.
pub fn current() -> DynProgress {
    match (MODE.get(), LINES.get()) {
        (Some(Mode::Line), Some(lines)) => Arc::new(Line {
            lines: lines.clone(),
            bar: Mutex::new(None),
        }),
        (Some(Mode::Log), _) => Arc::new(Logged::tracing(LOG_EVERY)),
        _ => progress::silent(),
    }
}

/// The progress line of one operation at a time.
struct Line {
    lines: MultiProgress,
    bar: Mutex<Option<(ProgressBar, Total, Unit)>>,
}

fn template(total: Total, unit: Unit) -> &'static str {
    match (total, unit) {
        (Total::Exact(_), Unit::Bytes) => "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {percent:>3}% {binary_bytes_per_sec} ETA {eta}",
        (Total::About(_), Unit::Bytes) => "{msg} [{bar:30}] {binary_bytes}/~{binary_total_bytes} ~{percent}% {binary_bytes_per_sec} ETA ~{eta}",
        (Total::Unknown, Unit::Bytes) => "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
        (Total::Exact(_), Unit::Rows) => "{msg} [{bar:30}] {human_pos}/{human_len} rows {percent:>3}% {per_sec} ETA {eta}",
        (Total::About(_), Unit::Rows) => "{msg} [{bar:30}] {human_pos}/~{human_len} rows ~{percent}% {per_sec} ETA ~{eta}",
        (Total::Unknown, Unit::Rows) => "{spinner} {msg} {human_pos} rows {per_sec} {elapsed}",
    }
}

fn style(t: &str) -> ProgressStyle {
    ProgressStyle::with_template(t)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

impl Progress for Line {
    fn start(&self, what: &str, total: Total, unit: Unit) {
        // Hidden until added: a bar draws on its own otherwise, and that
        // line would stay behind.
        let bar = ProgressBar::with_draw_target(total.value(), ProgressDrawTarget::hidden())
            .with_style(style(template(total, unit)))
            .with_message(what.to_owned());
        let bar = self.lines.add(bar);
        // Rate and ETA move on while a read stalls.
        bar.enable_steady_tick(Duration::from_millis(250));
        let old = self
            .bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((bar, total, unit));
        if let Some((b, ..)) = old {
            b.abandon();
        }
    }

    fn set_total(&self, new: Total) {
        let mut g = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let Some((bar, total, unit)) = g.as_mut() else {
            return;
        };
        if let Some(n) = new.value() {
            bar.set_length(n);
        }
        if std::mem::discriminant(total) != std::mem::discriminant(&new) {
            bar.set_style(style(template(new, *unit)));
        }
        *total = new;
    }

    fn advance(&self, n: u64) {
        let g = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let Some((bar, total, _)) = g.as_ref() else {
            return;
        };
        bar.inc(n);
        // An estimate that was too low grows instead of sitting past 100 %.
        if let Total::About(_) = total {
            if bar.length().is_some_and(|l| bar.position() > l) {
                bar.set_length(bar.position());
            }
        }
    }

    fn finish(&self, ok: bool) {
        let Some((bar, total, unit)) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return;
        };
        // Failed before reading anything (a refused target, a bad key):
        // the error says it all.
        if !ok && bar.position() == 0 {
            bar.finish_and_clear();
            return;
        }
        // The last state is printed as a plain line: a finished bar left to
        // indicatif is wiped by the next log line.
        let _ = self.lines.println(final_line(
            &bar.message(),
            bar.position(),
            total,
            unit,
            bar.elapsed(),
            ok,
        ));
        bar.finish_and_clear();
    }
}

/// The line an operation leaves on the terminal.
fn final_line(what: &str, done: u64, total: Total, unit: Unit, took: Duration, ok: bool) -> String {
    let amount = |n: u64| match unit {
        Unit::Bytes => BinaryBytes(n).to_string(),
        Unit::Rows => format!("{} rows", HumanCount(n)),
    };
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 {
        amount((done as f64 / secs) as u64) + "/s"
    } else {
        "-".into()
    };
    let took = HumanDuration(took);
    if ok {
        format!(
            "{what} [{}] {} 100% in {took} ({rate})",
            "=".repeat(30),
            amount(done)
        )
    } else {
        let at = match total.value() {
            Some(t) if t > 0 => format!(
                " of {}{} ({}%)",
                if matches!(total, Total::About(_)) {
                    "~"
                } else {
                    ""
                },
                amount(t),
                (done.saturating_mul(100) / t).min(100)
            ),
            _ => String::new(),
        };
        format!("{what}: stopped after {}{at} in {took}", amount(done))
    }
}

/// Log lines go to stderr around the progress line (hidden while a line is
/// written, then redrawn) so that neither garbles the other.
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match LINES.get() {
            Some(lines) => lines.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match LINES.get() {
            Some(lines) => lines.suspend(|| io::stderr().write_all(buf)),
            None => io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Writes a line to stderr above the progress line, if one is drawn (the
/// interrupt notice comes while a run is going).
pub fn eprint_line(line: &str) {
    let _ = LogWriter.write_all(format!("{line}\n").as_bytes());
}
