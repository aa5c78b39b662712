//! Input lines as they arrive, for live scoring: a reader thread parses the
//! lines of a pipe, FIFO or terminal into samples the moment each line is
//! complete, and [`Gather`] cuts them into batches without waiting for the
//! end of the input.
//!
//! A batch is handed on when it is full, when no new line has come for the
//! batch wait, or when the input ends. So a line that arrives alone (a
//! camera's image announced by `inotifywait`) waits at most the batch wait
//! before it is scored, while a burst of lines still fills batches.
//!
//! Order is the input's: samples are never reordered, and a bad line
//! (invalid JSON, not UTF-8, a read error) comes after every sample of the
//! lines before it, so a consumer scores and writes those first and then
//! stops at the bad line, as it would at an unreadable image.
//!
//! The reader thread reads ahead without bound (a sample is a few hundred
//! bytes), so a writer that fills the pipe never blocks while the consumer
//! is busy writing results that the same writer reads.

use std::io::BufRead;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::Duration;

use crate::data::record::{lines, parse_line, Sample};
use crate::Result;

/// Parses the lines of `reader` on a thread of its own and sends each
/// sample as soon as its line is complete; a bad line is sent as its error
/// and ends the stream. `source_name` names the input in errors
/// (`stdin:7: not valid JSON ...`). `open` runs on the thread first, so
/// opening a FIFO (which blocks until a writer comes) delays nothing else.
pub fn read_in_background<R, F>(open: F, source_name: String) -> Receiver<Result<Sample>>
where
    R: BufRead,
    F: FnOnce() -> Result<R> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let reader = match open() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for line in lines(reader, &source_name) {
            let parsed = line.and_then(|(line_no, text)| parse_line(&text, &source_name, line_no));
            let stop = parsed.is_err();
            match parsed {
                Ok(None) => continue,
                Ok(Some(sample)) => {
                    if tx.send(Ok(sample)).is_err() {
                        // The consumer stopped (an error or a closed pipe).
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            if stop {
                return;
            }
        }
    });
    rx
}

/// Batches of samples from a [`read_in_background`] stream: each is full
/// (`max` samples), or ends when no sample came for `wait`, or at the end
/// of the input. A bad line yields the samples before it as a batch, then
/// its error, then nothing.
pub struct Gather {
    rx: Receiver<Result<Sample>>,
    max: usize,
    wait: Duration,
    keep: Box<dyn FnMut(&Sample) -> bool + Send>,
    pending_error: Option<crate::Error>,
    ended: bool,
}

impl Gather {
    /// Batches of at most `max` (at least 1) samples of `rx`.
    pub fn new(rx: Receiver<Result<Sample>>, max: usize, wait: Duration) -> Self {
        Gather { rx, max: max.max(1), wait, keep: Box::new(|_| true), pending_error: None, ended: false }
    }

    /// Leaves out the samples for which `keep` is false (e.g. images that
    /// already have a result); they still count as input that arrived.
    pub fn keep(mut self, keep: impl FnMut(&Sample) -> bool + Send + 'static) -> Self {
        self.keep = Box::new(keep);
        self
    }

    /// The next sample within `wait`; `None` when the wait ran out or the
    /// stream ended (then `ended` is set), or a bad line came (then it is
    /// held in `pending_error`).
    fn next_within(&mut self, wait: Duration) -> Option<Sample> {
        loop {
            let received = if wait.is_zero() {
                self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                self.rx.recv_timeout(wait)
            };
            match received {
                Ok(Ok(sample)) if (self.keep)(&sample) => return Some(sample),
                // Input that arrived but is left out: wait afresh.
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    self.pending_error = Some(e);
                    return None;
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

impl Iterator for Gather {
    type Item = Result<Vec<Sample>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_error.take() {
            self.ended = true;
            return Some(Err(e));
        }
        if self.ended {
            return None;
        }
        // The first sample of a batch: wait as long as it takes (a live
        // line may come in an hour).
        let first = loop {
            match self.rx.recv() {
                Ok(Ok(sample)) if (self.keep)(&sample) => break sample,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < self.max {
            match self.next_within(self.wait) {
                Some(sample) => batch.push(sample),
                None => break,
            }
        }
        Some(Ok(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};
    use std::sync::mpsc::Sender;
    use std::time::Instant;

    /// A reader that yields the chunks sent to it, blocking in between, as
    /// a pipe does.
    struct ChunkReader {
        rx: Receiver<Vec<u8>>,
        current: Vec<u8>,
    }

    impl Read for ChunkReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.current.is_empty() {
                match self.rx.recv() {
                    Ok(chunk) => self.current = chunk,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.current.len());
            buf[..n].copy_from_slice(&self.current[..n]);
            self.current.drain(..n);
            Ok(n)
        }
    }

    fn pipe() -> (Sender<Vec<u8>>, Receiver<Result<Sample>>) {
        let (tx, rx) = mpsc::channel();
        let stream = read_in_background(
            move || Ok(BufReader::new(ChunkReader { rx, current: Vec::new() })),
            "stdin".to_string(),
        );
        (tx, stream)
    }

    fn names(batch: &[Sample]) -> Vec<String> {
        batch.iter().map(|s| s.image.display().to_string()).collect()
    }

    #[test]
    fn a_line_is_handed_on_before_the_input_ends() {
        let (tx, stream) = pipe();
        // A long wait: the batch must still come at once when full.
        let mut gather = Gather::new(stream, 2, Duration::from_secs(3600));
        tx.send(b"a.png\nb.p".to_vec()).unwrap();
        tx.send(b"ng\nc.png\n".to_vec()).unwrap();
        assert_eq!(names(&gather.next().unwrap().unwrap()), ["a.png", "b.png"]);
        // c.png is alone: with a wait of zero it goes on by itself, while
        // the writer still holds the input open.
        let mut gather = Gather { wait: Duration::ZERO, ..gather };
        assert_eq!(names(&gather.next().unwrap().unwrap()), ["c.png"]);
        tx.send(b"d.png\n".to_vec()).unwrap();
        assert_eq!(names(&gather.next().unwrap().unwrap()), ["d.png"]);
        drop(tx);
        assert!(gather.next().is_none());
        assert!(gather.next().is_none());
    }

    #[test]
    fn a_partial_batch_waits_for_the_batch_wait_without_new_input() {
        let (tx, stream) = pipe();
        let wait = Duration::from_millis(200);
        let mut gather = Gather::new(stream, 8, wait);
        tx.send(b"a.png\n".to_vec()).unwrap();
        let start = Instant::now();
        assert_eq!(names(&gather.next().unwrap().unwrap()), ["a.png"]);
        // Not before the wait ran out (an upper bound would be a timing
        // threshold a loaded machine could miss).
        assert!(start.elapsed() >= wait);
        drop(tx);
        assert!(gather.next().is_none());
    }

    #[test]
    fn a_bad_line_comes_after_the_samples_before_it_and_ends_the_stream() {
        let (tx, stream) = pipe();
        tx.send(b"a.png\n\n{\"image\": \"b.png\"}\n{oops\nc.png\n".to_vec()).unwrap();
        let mut gather = Gather::new(stream, 8, Duration::from_secs(3600));
        assert_eq!(names(&gather.next().unwrap().unwrap()), ["a.png", "b.png"]);
        let e = gather.next().unwrap().unwrap_err().to_string();
        assert!(e.starts_with("stdin:4: not valid JSON"), "{e}");
        assert!(gather.next().is_none());
    }

    #[test]
    fn left_out_samples_are_skipped_in_order() {
        let (tx, stream) = pipe();
        tx.send(b"a.png\nskip.png\nb.png\nskip.png\n".to_vec()).unwrap();
        drop(tx);
        let gather = Gather::new(stream, 8, Duration::from_secs(3600)).keep(|s| !s.image.ends_with("skip.png"));
        let batches: Vec<Vec<String>> = gather.map(|b| names(&b.unwrap())).collect();
        assert_eq!(batches, [["a.png", "b.png"]]);
    }
}
