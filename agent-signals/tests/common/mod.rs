//! A local stub of the chat-completions API, for the tests of this crate:
//! it plays scripted replies in order, one connection each, and keeps the
//! requests it saw.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted reply.
pub enum Reply {
    Answer(&'static str),
    Body(String),
    Status(u16),
    Slow(Duration),
}

/// A chat-completions response carrying `content`, 350 tokens used.
pub fn chat_response(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 50, "total_tokens": 350}
    })
    .to_string()
}

/// A valid view: long, 0.75.
pub const GOOD: &str = r#"{"direction":"long","confidence":0.75,"rationale":"uptrend"}"#;

/// The requests a stub saw: (head, body).
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A stub server playing `replies` in order; returns its base URL and the
/// requests it saw.
pub fn stub(replies: Vec<Reply>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (stream, reply) in listener.incoming().zip(replies) {
            let Ok(stream) = stream else { return };
            let log = log.clone();
            // Each connection on its own: a slow answer holds up no other.
            std::thread::spawn(move || answer(stream, reply, &log));
        }
    });
    (url, seen)
}

fn answer(mut stream: std::net::TcpStream, reply: Reply, log: &Mutex<Vec<(String, String)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    log.lock()
        .unwrap()
        .push((head, String::from_utf8(body).unwrap()));
    let (status, text) = match reply {
        Reply::Answer(content) => (200, chat_response(content)),
        Reply::Body(body) => (200, body),
        Reply::Status(code) => (code, "{\"error\":{\"message\":\"busy\"}}".to_string()),
        Reply::Slow(pause) => {
            std::thread::sleep(pause);
            (200, chat_response(GOOD))
        }
    };
    let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
}
