//! The record format: framing, checksums, encoding and decoding of the
//! journal's five kinds of record, and the scan that finds them in a segment.

use super::*;

pub(super) const MAGIC: u8 = 0xB5;
pub(super) const HEADER: usize = 10;
/// Largest record accepted when reading back (a corrupt length field must
/// not make the reader allocate gigabytes).
pub(super) const MAX_RECORD: usize = 64 << 20;

pub(super) const KIND_MESSAGE: u8 = 1;
pub(super) const KIND_ACK: u8 = 2;
pub(super) const KIND_EXPIRED: u8 = 3;
pub(super) const KIND_DEAD_LETTER: u8 = 4;
pub(super) const KIND_PROCESSED: u8 = 5;

pub(super) fn crc(kind: u8, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    hasher.finalize()
}

pub(super) fn frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(MAGIC);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(kind, body).to_le_bytes());
    out.extend_from_slice(body);
}

pub(super) fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A decoded record body.
#[derive(Debug)]
pub(super) enum Record<'a> {
    Message {
        seq: u64,
        id: MessageId,
        expires_at_ms: Option<i64>,
        subs: Vec<&'a str>,
        json: &'a [u8],
    },
    Ack {
        id: MessageId,
        sub: &'a str,
        processed: bool,
    },
    Expired {
        id: MessageId,
        sub: &'a str,
    },
    DeadLetter {
        id: MessageId,
        sub: &'a str,
        json: &'a [u8],
    },
    Processed {
        id: MessageId,
        sub: &'a str,
    },
}

pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub(super) fn id(&mut self) -> Option<MessageId> {
        self.take(16)
            .map(|b| MessageId::from_u128(u128::from_be_bytes(b.try_into().expect("16 bytes"))))
    }
    pub(super) fn str(&mut self) -> Option<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

pub(super) fn id_bytes(id: MessageId) -> [u8; 16] {
    id.as_uuid().as_u128().to_be_bytes()
}

pub(super) fn encode_message(
    out: &mut Vec<u8>,
    seq: u64,
    id: MessageId,
    expires_at_ms: Option<i64>,
    subs: &[Arc<str>],
    json: &[u8],
) {
    let mut body = Vec::with_capacity(40 + json.len() + subs.len() * 16);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&id_bytes(id));
    body.extend_from_slice(&(expires_at_ms.unwrap_or(i64::MIN) as u64).to_le_bytes());
    body.extend_from_slice(&(subs.len() as u16).to_le_bytes());
    for sub in subs {
        put_str(&mut body, sub);
    }
    body.extend_from_slice(json);
    frame(out, KIND_MESSAGE, &body);
}

pub(super) fn encode_resolution(
    out: &mut Vec<u8>,
    kind: u8,
    id: MessageId,
    sub: &str,
    extra: &[u8],
) {
    let mut body = Vec::with_capacity(20 + sub.len() + extra.len());
    body.extend_from_slice(&id_bytes(id));
    put_str(&mut body, sub);
    body.extend_from_slice(extra);
    frame(out, kind, &body);
}

pub(super) fn decode(kind: u8, body: &[u8]) -> Option<Record<'_>> {
    let mut c = Cursor { bytes: body };
    Some(match kind {
        KIND_MESSAGE => {
            let seq = c.u64()?;
            let id = c.id()?;
            let expires = c.u64()? as i64;
            let n = c.u16()? as usize;
            let mut subs = Vec::with_capacity(n);
            for _ in 0..n {
                subs.push(c.str()?);
            }
            Record::Message {
                seq,
                id,
                expires_at_ms: (expires != i64::MIN).then_some(expires),
                subs,
                json: c.rest(),
            }
        }
        KIND_ACK => {
            let id = c.id()?;
            let sub = c.str()?;
            let processed = c.u8()? == 1;
            Record::Ack { id, sub, processed }
        }
        KIND_EXPIRED => Record::Expired {
            id: c.id()?,
            sub: c.str()?,
        },
        KIND_DEAD_LETTER => Record::DeadLetter {
            id: c.id()?,
            sub: c.str()?,
            json: c.rest(),
        },
        KIND_PROCESSED => Record::Processed {
            id: c.id()?,
            sub: c.str()?,
        },
        _ => return None,
    })
}

/// Whether a well-formed record starts at `pos`; its total length if so.
pub(super) fn record_at(bytes: &[u8], pos: usize) -> Result<usize, &'static str> {
    let header = bytes.get(pos..pos + HEADER).ok_or("cut short")?;
    if header[0] != MAGIC {
        return Err("not a record boundary");
    }
    let len = u32::from_le_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD {
        return Err("impossible record length");
    }
    let body = bytes
        .get(pos + HEADER..pos + HEADER + len)
        .ok_or("cut short")?;
    let expected = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
    if crc(header[1], body) != expected {
        return Err("checksum mismatch");
    }
    Ok(HEADER + len)
}

/// Walks the records of one segment, reporting what it skips.
pub(super) fn scan(
    file: &Path,
    bytes: &[u8],
    issues: &mut Vec<RecoveryIssue>,
    mut each: impl FnMut(u8, &[u8]),
) -> usize {
    let mut pos = 0;
    let mut good_end = 0;
    while pos < bytes.len() {
        match record_at(bytes, pos) {
            Ok(len) => {
                let kind = bytes[pos + 1];
                each(kind, &bytes[pos + HEADER..pos + len]);
                pos += len;
                good_end = pos;
            }
            Err(problem) => {
                // Look for the next intact record.
                let next = (pos + 1..bytes.len())
                    .find(|&p| bytes[p] == MAGIC && record_at(bytes, p).is_ok())
                    .unwrap_or(bytes.len());
                let problem = if next == bytes.len() {
                    // The tail: zeros are preallocated space never written;
                    // anything else is a record the crash cut short.
                    let written = bytes[pos..]
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(0, |i| i + 1);
                    if written == 0 {
                        break;
                    }
                    "record cut short (torn write at the end)"
                } else {
                    problem
                };
                issues.push(RecoveryIssue {
                    file: file.to_path_buf(),
                    offset: pos as u64,
                    skipped: (next - pos) as u64,
                    problem: problem.to_string(),
                });
                pos = next;
            }
        }
    }
    good_end
}
