//! stdout for data: buffered, flushed by the caller at batch boundaries
//! (line-buffered when a person watches a terminal). Never `println!`, which
//! panics on a closed pipe; write errors surface as `io::Error` and a broken
//! pipe becomes a quiet exit in [`super::exit`].

use std::io::{self, IsTerminal, Write};

/// A data sink on stdout.
pub struct DataOut {
    inner: io::BufWriter<io::Stdout>,
    line_buffered: bool,
}

impl DataOut {
    /// Wraps stdout, line-buffered on a terminal.
    pub fn stdout() -> Self {
        let stdout = io::stdout();
        let line_buffered = stdout.is_terminal();
        DataOut {
            inner: io::BufWriter::with_capacity(1 << 16, stdout),
            line_buffered,
        }
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(b"\n")?;
        if self.line_buffered {
            self.inner.flush()?;
        }
        Ok(())
    }

    /// Flushes what was written so far.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Write for DataOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
