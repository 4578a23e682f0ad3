//! An OpenAI-compatible chat-completions client (`POST
//! {base_url}/chat/completions`), bounded so that no run depends on a
//! network or on luck: each call has a timeout, calls are at least
//! `min_interval` apart, a run spends at most `max_calls` calls and
//! `max_tokens` tokens (from the responses' `usage`), HTTP 429 and 5xx are
//! retried with backoff (every attempt counts against the budget), and
//! answers come from the [`AnswerCache`] first. The API key goes in the
//! `Authorization` header and nowhere else (never in `Debug`, logs or
//! errors).
//!
//! Requests go out from a thread of its own (its own runtime): the
//! strategy asks and waits, from the signals agent's thread.

use std::time::{Duration, Instant};

use super::answer::{parse_response, Answer, Refusal};
use super::cache::{AnswerCache, CacheError, Kept};
use super::prompt;

/// Where the model is and how much of it a run may use.
#[derive(Clone)]
pub struct ModelSettings {
    /// The API's base URL (`https://api.openai.com/v1`, or a local server).
    pub base_url: String,
    /// The model.
    pub model: String,
    /// The API key, if the server wants one.
    pub api_key: Option<String>,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Least time between two calls.
    pub min_interval: Duration,
    /// Calls a run may make (attempts, retries included).
    pub max_calls: u64,
    /// Tokens a run may spend (prompt and completion).
    pub max_tokens: u64,
    /// Retries after HTTP 429 or 5xx.
    pub retries: u32,
}

impl std::fmt::Debug for ModelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("min_interval", &self.min_interval)
            .field("max_calls", &self.max_calls)
            .field("max_tokens", &self.max_tokens)
            .field("retries", &self.retries)
            .finish()
    }
}

/// What asking gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// A valid answer.
    Answer(Answer),
    /// An answer that is not a valid view (counted; no trade).
    Refused(Refusal),
    /// No answer: timeout, HTTP error after the retries, connection refused.
    Failed(String),
    /// The run's budget is spent: the model is not asked.
    OverBudget,
}

/// What a run used and saw. The first six figures are the same whether the
/// answers came from the model or from a recording; `calls`, `tokens` and
/// `cached` are what this run spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Questions put (one per consultation).
    pub questions: u64,
    /// Valid answers.
    pub answers: u64,
    /// Answers refused.
    pub refused: u64,
    /// Questions that got no answer (timeout, HTTP error).
    pub failed: u64,
    /// Questions not asked: budget spent.
    pub over_budget: u64,
    /// Tokens the answers (valid or refused) reported in their usage.
    pub answer_tokens: u64,
    /// HTTP attempts made by this run.
    pub calls: u64,
    /// Tokens the responses to this run's calls reported.
    pub tokens: u64,
    /// Questions answered from the recording, with no call.
    pub cached: u64,
}

struct Job {
    body: String,
    reply: std::sync::mpsc::Sender<Result<(u16, String), String>>,
}

/// The client (see the module docs).
pub struct ModelClient {
    settings: ModelSettings,
    jobs: std::sync::mpsc::Sender<Job>,
    last_call: Option<Instant>,
    spent: Spent,
}

impl ModelClient {
    /// Starts the client's thread.
    pub fn start(settings: ModelSettings) -> Result<Self, String> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let url = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        let key = settings.api_key.clone();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the model client's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("model-client".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let mut request = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(job.body);
                    if let Some(key) = &key {
                        request = request.bearer_auth(key);
                    }
                    let answer = runtime.block_on(async {
                        let response = request.send().await.map_err(describe)?;
                        let status = response.status().as_u16();
                        let text = response.text().await.map_err(describe)?;
                        Ok((status, text))
                    });
                    let _ = job.reply.send(answer);
                }
            })
            .map_err(|e| format!("cannot start the model client's thread: {e}"))?;
        Ok(Self {
            settings,
            jobs,
            last_call: None,
            spent: Spent::default(),
        })
    }

    /// What the run has used so far.
    pub fn spent(&self) -> Spent {
        self.spent
    }

    /// The model's view on `summary`: from `cache` when it keeps it, else
    /// asked (within the budget), the outcome kept in `cache` when
    /// recording. A replay miss is an error.
    pub fn ask(&mut self, summary: &str, cache: &mut AnswerCache) -> Result<Asked, CacheError> {
        self.spent.questions += 1;
        let model = self.settings.model.clone();
        if let Some(kept) = cache.get(&model, summary)? {
            self.spent.cached += 1;
            return Ok(match kept.clone() {
                Kept::Answer(body) => self.judge(&body).0,
                Kept::Failed(reason) => self.failed(reason),
                Kept::OverBudget => self.over_budget(),
            });
        }
        let (asked, kept) = self.call(summary);
        cache.put(&model, summary, kept)?;
        Ok(asked)
    }

    /// Asks the model over HTTP, with the retries the budget allows.
    fn call(&mut self, summary: &str) -> (Asked, Kept) {
        let body = prompt::request(&self.settings.model, summary).to_string();
        let mut attempt = 0;
        loop {
            if self.spent.calls >= self.settings.max_calls
                || self.spent.tokens >= self.settings.max_tokens
            {
                return (self.over_budget(), Kept::OverBudget);
            }
            self.wait_turn();
            self.spent.calls += 1;
            attempt += 1;
            match self.post(body.clone()) {
                Ok((200, text)) => {
                    let (asked, tokens) = self.judge(&text);
                    self.spent.tokens += tokens;
                    return (asked, Kept::Answer(text));
                }
                Ok((status, _))
                    if (status == 429 || status >= 500) && attempt <= self.settings.retries =>
                {
                    // Backoff: 1, 2, 4... times the least interval (at least 50 ms).
                    let base = self.settings.min_interval.max(Duration::from_millis(50));
                    std::thread::sleep(base * 2u32.saturating_pow(attempt - 1));
                }
                Ok((status, text)) => {
                    let said: String = text.chars().take(200).collect();
                    let reason = format!("HTTP {status}: {said}");
                    return (self.failed(reason.clone()), Kept::Failed(reason));
                }
                Err(reason) => return (self.failed(reason.clone()), Kept::Failed(reason)),
            }
        }
    }

    /// A response body, validated and counted, with the tokens it reports.
    fn judge(&mut self, body: &str) -> (Asked, u64) {
        let (answer, usage) = parse_response(body);
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        self.spent.answer_tokens += tokens;
        let asked = match answer {
            Ok(answer) => {
                self.spent.answers += 1;
                Asked::Answer(answer)
            }
            Err(refusal) => {
                self.spent.refused += 1;
                tracing::warn!(model = %self.settings.model, %refusal, "model answer refused");
                Asked::Refused(refusal)
            }
        };
        (asked, tokens)
    }

    fn failed(&mut self, reason: String) -> Asked {
        self.spent.failed += 1;
        tracing::warn!(model = %self.settings.model, %reason, "model call failed");
        Asked::Failed(reason)
    }

    fn over_budget(&mut self) -> Asked {
        self.spent.over_budget += 1;
        if self.spent.over_budget == 1 {
            tracing::warn!(
                model = %self.settings.model,
                max_calls = self.settings.max_calls,
                max_tokens = self.settings.max_tokens,
                "the model budget is spent: the technical signals decide alone from here"
            );
        }
        Asked::OverBudget
    }

    fn wait_turn(&mut self) {
        if let Some(last) = self.last_call {
            let due = last + self.settings.min_interval;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.last_call = Some(Instant::now());
    }

    fn post(&self, body: String) -> Result<(u16, String), String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs
            .send(Job { body, reply })
            .map_err(|_| "the model client's thread is gone".to_string())?;
        answer
            .recv()
            .map_err(|_| "the model client's thread is gone".to_string())?
    }
}

/// A request error without its URL's secrets (the key is in a header, but
/// a URL may carry one too).
fn describe(error: reqwest::Error) -> String {
    match error.is_timeout() {
        true => "timed out".into(),
        false => error.without_url().to_string(),
    }
}
