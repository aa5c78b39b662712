//! stdout for data: buffered, flushed by the caller at batch boundaries
//! (line-buffered when a person watches a terminal). Never `println!`, which
//! panics on a closed pipe; write errors surface as `io::Error` and a broken
//! pipe becomes a quiet exit in [`super::exit`].
//!
//! A command whose exit status still depends on input it has not read yet
//! (`dinomaly-score --fail-above`) asks for [`DataOut::keep_going_when_closed`]:
//! after a broken pipe its lines are dropped instead of failing, so it can
//! finish and report a defined negative result (exit 1) that the reader
//! leaving early must not turn into a success.

use std::io::{self, IsTerminal, Write};

/// A data sink on stdout.
pub struct DataOut {
    inner: io::BufWriter<io::Stdout>,
    line_buffered: bool,
    keep_going: bool,
    closed: bool,
}

impl DataOut {
    /// Wraps stdout, line-buffered on a terminal.
    pub fn stdout() -> Self {
        let stdout = io::stdout();
        let line_buffered = stdout.is_terminal();
        DataOut {
            inner: io::BufWriter::with_capacity(1 << 16, stdout),
            line_buffered,
            keep_going: false,
            closed: false,
        }
    }

    /// After a broken pipe, drop what is written instead of returning the
    /// error (see the module documentation); [`DataOut::closed`] tells.
    pub fn keep_going_when_closed(mut self) -> Self {
        self.keep_going = true;
        self
    }

    /// Whether the reader went away (only with `keep_going_when_closed`).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = (|| {
            self.inner.write_all(text.as_bytes())?;
            self.inner.write_all(b"\n")?;
            if self.line_buffered {
                self.inner.flush()?;
            }
            Ok(())
        })();
        self.absorb(result)
    }

    /// Flushes what was written so far.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush();
        self.absorb(result)
    }

    /// Turns a broken pipe into "closed" when asked to keep going.
    fn absorb<T: Default>(&mut self, result: io::Result<T>) -> io::Result<T> {
        match result {
            Err(e) if self.keep_going && e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(T::default())
            }
            other => other,
        }
    }
}

impl Write for DataOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let result = self.inner.write(buf);
        match self.absorb(result) {
            Ok(0) if self.closed => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        DataOut::flush(self)
    }
}
