//! `GET /v1/events/stream` read as server-sent events: `id:`, `event:` and
//! `data:` lines, a blank line ends an event, `:` lines are keep-alives.

use std::time::Duration;

use futures_util::Stream;

use crate::error::{Error, Result};
use crate::types::Event;

/// The server sends a keep-alive every 15 s: a stream silent for longer
/// than this is taken for dead (a peer gone without closing the connection).
const IDLE: Duration = Duration::from_secs(45);

/// An open event stream. Reconnect with [`EventStream::last_event_id`] to
/// miss nothing.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    data: String,
    /// The `id:` of the event being read.
    id: Option<String>,
    last_event_id: Option<String>,
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response, last_event_id: Option<String>) -> EventStream {
        EventStream { response, buffer: Vec::new(), data: String::new(), id: None, last_event_id }
    }

    /// The id of the last event read (or the one the stream resumed after).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line);
                if line.is_empty() {
                    if self.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut self.data);
                    let parsed = serde_json::from_str::<Event>(&data)
                        .map_err(|e| Error::Decode { status: 200, message: format!("an event's data: {e}") });
                    // The stream's place moves past an event even when its data
                    // can't be read: a reconnect must not deliver it again.
                    match (&parsed, self.id.take()) {
                        (Ok(event), _) => self.last_event_id = Some(event.id.clone()),
                        (Err(_), Some(id)) => self.last_event_id = Some(id),
                        (Err(_), None) => {}
                    }
                    return Some(parsed);
                }
                if let Some(value) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                if let Some(value) = line.strip_prefix("id:") {
                    self.id = Some(value.trim().to_owned());
                }
                // `event:` repeats the type; `:` is a keep-alive.
            }
            match tokio::time::timeout(IDLE, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => return Some(Err(Error::Transport(e))),
                Err(_) => return Some(Err(Error::Idle(IDLE))),
            }
        }
    }

    /// The events as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|item| (item, s)) })
    }
}
