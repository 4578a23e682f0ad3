//! Model answers kept by a hash of (model, prompt), in a JSON-lines file
//! next to the data, so a backtest that asks a model is reproducible:
//! `record` asks the model and writes each answer; `replay` reads only the
//! file and fails, naming the prompt's key, when it has no answer.
//!
//! A line: `{"key": "<sha256 hex>", "model": "...", "answer": "<the
//! response body>"}`. The body is kept whole, so a replayed answer goes
//! through the same validation, and counts the same tokens, as the first.
//! A question that got no answer while recording is kept too
//! (`"failed": "<why>"`, or `"over_budget": true`), so that a replay falls
//! back to the technical signals on the same bars as the recording did;
//! recording again asks those questions again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// How the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Ask the model every time; keep nothing.
    Live,
    /// Ask the model when the file has no answer, and write the answer.
    Record,
    /// Read only the file; no answer is an error.
    Replay,
}

/// What went wrong with the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be read or written.
    #[error("answer cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line of the file is not an entry.
    #[error("answer cache {path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its line (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Replay found no answer for a prompt.
    #[error("answer cache {path}: no answer for model {model:?} and prompt {key} (replay reads only the file: record it first)")]
    Miss {
        /// The file.
        path: PathBuf,
        /// The model.
        model: String,
        /// The prompt's key.
        key: String,
    },
}

/// What the file keeps for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The response body.
    Answer(String),
    /// No answer: why (timeout, HTTP error...).
    Failed(String),
    /// Not asked: the recording run's budget was spent.
    OverBudget,
}

/// The key of (model, prompt): SHA-256 of both, hex.
pub fn key(model: &str, prompt: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(model.as_bytes());
    hash.update([0u8]);
    hash.update(prompt.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The answers of one file.
pub struct AnswerCache {
    path: PathBuf,
    mode: CacheMode,
    answers: HashMap<String, Kept>,
    out: Option<File>,
}

impl AnswerCache {
    /// Opens `path` for `mode` (recording creates it if needed and appends).
    pub fn open(path: &Path, mode: CacheMode) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut answers = HashMap::new();
        if mode != CacheMode::Live && (mode == CacheMode::Replay || path.exists()) {
            let file = File::open(path).map_err(io)?;
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                let bad = |reason: String| CacheError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason,
                };
                let entry: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| bad(format!("not JSON: {e}")))?;
                let Some(key) = entry["key"].as_str() else {
                    return Err(bad("an entry needs `key` text".into()));
                };
                let kept = match (&entry["answer"], &entry["failed"], &entry["over_budget"]) {
                    (serde_json::Value::String(body), _, _) => Kept::Answer(body.clone()),
                    (_, serde_json::Value::String(why), _) => Kept::Failed(why.clone()),
                    (_, _, serde_json::Value::Bool(true)) => Kept::OverBudget,
                    _ => {
                        return Err(bad(
                            "an entry needs `answer` or `failed` text, or `over_budget`: true"
                                .into(),
                        ))
                    }
                };
                answers.insert(key.to_string(), kept);
            }
        }
        let out = match mode {
            CacheMode::Record => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io)?,
            ),
            _ => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            mode,
            answers,
            out,
        })
    }

    /// What is kept for (model, prompt): `Ok(None)` when the model must
    /// be asked (live; recording a question without a kept answer), an
    /// error when replay has nothing.
    pub fn get(&self, model: &str, prompt: &str) -> Result<Option<&Kept>, CacheError> {
        let key = key(model, prompt);
        match (self.mode, self.answers.get(&key)) {
            (CacheMode::Live, _) => Ok(None),
            (CacheMode::Record, Some(answer @ Kept::Answer(_))) => Ok(Some(answer)),
            (CacheMode::Record, _) => Ok(None),
            (CacheMode::Replay, Some(kept)) => Ok(Some(kept)),
            (CacheMode::Replay, None) => Err(CacheError::Miss {
                path: self.path.clone(),
                model: model.into(),
                key,
            }),
        }
    }

    /// The mode it was opened in.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps what asking gave (recording only), written at once.
    pub fn put(&mut self, model: &str, prompt: &str, kept: Kept) -> Result<(), CacheError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let key = key(model, prompt);
        let line = match &kept {
            Kept::Answer(body) => serde_json::json!({"key": key, "model": model, "answer": body}),
            Kept::Failed(why) => serde_json::json!({"key": key, "model": model, "failed": why}),
            Kept::OverBudget => {
                serde_json::json!({"key": key, "model": model, "over_budget": true})
            }
        };
        writeln!(out, "{line}").map_err(|source| CacheError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.answers.insert(key, kept);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_answers_replay_and_a_miss_names_the_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answers.jsonl");
        let mut record = AnswerCache::open(&path, CacheMode::Record).unwrap();
        assert_eq!(
            record.get("m", "prompt one").unwrap(),
            None,
            "ask the model"
        );
        let body = Kept::Answer("{\"body\": 1}".into());
        record.put("m", "prompt one", body.clone()).unwrap();
        assert_eq!(record.get("m", "prompt one").unwrap(), Some(&body));
        record
            .put("m", "timed out", Kept::Failed("timed out".into()))
            .unwrap();
        record.put("m", "no budget", Kept::OverBudget).unwrap();
        assert_eq!(
            record.get("m", "timed out").unwrap(),
            None,
            "recording asks again what got no answer"
        );
        drop(record);
        let replay = AnswerCache::open(&path, CacheMode::Replay).unwrap();
        assert_eq!(replay.get("m", "prompt one").unwrap(), Some(&body));
        assert_eq!(
            replay.get("m", "timed out").unwrap(),
            Some(&Kept::Failed("timed out".into())),
            "a replay gives no answer where the recording had none"
        );
        assert_eq!(
            replay.get("m", "no budget").unwrap(),
            Some(&Kept::OverBudget)
        );
        // Another model or prompt is another key.
        let miss = replay.get("other", "prompt one").unwrap_err().to_string();
        assert!(
            miss.contains(&key("other", "prompt one")) && miss.contains("record it first"),
            "{miss}"
        );
        assert!(replay.get("m", "prompt two").is_err());
        assert_ne!(key("ab", "c"), key("a", "bc"));
        let live = AnswerCache::open(&path, CacheMode::Live).unwrap();
        assert_eq!(
            live.get("m", "prompt one").unwrap(),
            None,
            "live always asks"
        );
        // A broken line is named.
        std::fs::write(&path, "{\"key\": \"k\", \"answer\": \"a\"}\nnot json\n").unwrap();
        let broken = AnswerCache::open(&path, CacheMode::Replay)
            .err()
            .unwrap()
            .to_string();
        assert!(broken.contains("answers.jsonl:2"), "{broken}");
        let absent = AnswerCache::open(&dir.path().join("none.jsonl"), CacheMode::Replay);
        assert!(absent.is_err(), "replay needs its file");
    }
}
